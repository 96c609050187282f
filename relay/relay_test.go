package relay

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

func TestRelayDeliversCommittedOnlyInKeyOrder(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 6)
	r := startEngine(t, d.DB, testConfig(k.Addrs))

	const producers, txPerProducer = 8, 40
	ctx := context.Background()
	var mu sync.Mutex
	rolledBack := map[string]bool{}
	committed := 0
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 7))
			seq := map[string]int{}
			for i := range txPerProducer {
				var msgs []txmsg.Message
				for j := range 1 + rng.IntN(3) {
					key := fmt.Sprintf("p%d-k%d", p, (i+j)%5)
					seq[key]++
					m := msg("orders", key, seq[key])
					m.ID = fmt.Sprintf("p%d-t%d-m%d", p, i, j)
					msgs = append(msgs, m)
				}
				commit := rng.IntN(4) != 0
				if err := publishTx(ctx, d.DB, commit, msgs...); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				mu.Lock()
				for _, m := range msgs {
					if commit {
						committed++
					} else {
						rolledBack[m.ID] = true
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	msgs := waitDelivered(t, k.Addrs, "orders", committed, 30*time.Second)
	if len(msgs) != committed {
		t.Fatalf("delivered %d distinct messages, committed %d", len(msgs), committed)
	}
	checkOrder(t, msgs, rolledBack)
	for _, m := range msgs {
		if got := testenv.HeaderValue(m, txmsg.HeaderSource); got != txmsg.SourceOutbox {
			t.Fatalf("header %s = %q, want %q", txmsg.HeaderSource, got, txmsg.SourceOutbox)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox"); n != 0 {
			return fmt.Errorf("%d outbox rows left", n)
		}
		return nil
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_relay_leases WHERE owner <> ''"); n != 0 {
		t.Errorf("%d leases still held after shutdown", n)
	}
}

// A transaction that takes a lower seq but commits after a later one must
// still be delivered: the relay is state-based, not offset-based.
func TestRelayLateCommitIsDelivered(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	ctx := context.Background()

	txA, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := msg("late", "same-shard", 1)
	a.ID = "A"
	if err := outbox.Publish(ctx, txA, a); err != nil {
		t.Fatal(err)
	}
	b := msg("late", "same-shard", 2)
	b.ID = "B"
	if err := publishTx(ctx, d.DB, true, b); err != nil {
		t.Fatal(err)
	}
	startEngine(t, d.DB, testConfig(k.Addrs))
	waitDelivered(t, k.Addrs, "late", 1, 10*time.Second)
	if err := txA.Commit(); err != nil {
		t.Fatal(err)
	}
	msgs := waitDelivered(t, k.Addrs, "late", 2, 10*time.Second)
	ids := []string{testenv.HeaderValue(msgs[0], txmsg.HeaderID), testenv.HeaderValue(msgs[1], txmsg.HeaderID)}
	if ids[0] != "B" || ids[1] != "A" {
		t.Fatalf("delivered %v, want [B A] (commit order)", ids)
	}
}
