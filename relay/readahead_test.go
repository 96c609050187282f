package relay

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

// countingSource is the outbox source, counting the reads the change probe
// makes for the idle shards it wakes.
type countingSource struct {
	*OutboxSource
	mu sync.Mutex
	// shared counts the reads that returned rows of two shards or more;
	// own counts the rows the workers' own polls read.
	shared, own int
}

func (s *countingSource) Pending(ctx context.Context, q Querier, shard int, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.Pending(ctx, q, shard, limit)
	s.mu.Lock()
	s.own += len(rows)
	s.mu.Unlock()
	return rows, err
}

func (s *countingSource) PendingFrom(ctx context.Context, q Querier, shard int, from int64, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.PendingFrom(ctx, q, shard, from, limit)
	s.mu.Lock()
	s.own += len(rows)
	s.mu.Unlock()
	return rows, err
}

func (s *countingSource) PendingShards(ctx context.Context, q Querier, from map[int]int64, limit Limit) (map[int][]Row, error) {
	rows, err := s.OutboxSource.PendingShards(ctx, q, from, limit)
	if len(rows) >= 2 {
		s.mu.Lock()
		s.shared++
		s.mu.Unlock()
	}
	return rows, err
}

// The change probe reads the shards it wakes whose workers wait idle, with
// one statement, and each worker publishes what was read for it instead of
// polling: a transaction's messages spread over several shards arrive, in
// key order, without the workers reading them themselves.
func TestRelayChangeProbeReadsForIdleShards(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	src := &countingSource{OutboxSource: NewOutboxSource(false)}
	cfg := testConfig(k.Addrs)
	// Idle workers look for themselves only this often: the probe's reads
	// deliver the rows.
	cfg.PollMax = 5 * time.Second
	r := startEngine(t, d.DB, cfg, WithSources(src))
	testenv.Eventually(t, 10*time.Second, func() error {
		if !r.Ready() {
			return fmt.Errorf("engine not ready")
		}
		return nil
	})
	ctx := context.Background()
	const keys, rounds = 12, 3
	sent := 0
	for n := range rounds {
		// Let every worker go idle before the next transaction.
		time.Sleep(300 * time.Millisecond)
		var msgs []txmsg.Message
		for i := range keys {
			msgs = append(msgs, msg("ahead", fmt.Sprint("key-", i), n+1))
		}
		if err := publishTx(ctx, d.DB, true, msgs...); err != nil {
			t.Fatal(err)
		}
		sent += keys
		waitDelivered(t, k.Addrs, "ahead", sent, 10*time.Second)
	}
	checkOrder(t, waitDelivered(t, k.Addrs, "ahead", sent, 10*time.Second), nil)
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.shared == 0 {
		t.Fatal("no read of the change probe served two shards or more")
	}
	// A worker woken by its timer before the probe's read came polls for
	// itself, rarely; without the reads, every row would be read so.
	if src.own >= sent {
		t.Fatalf("the workers' own polls read %d rows of %d: the probe's reads went unused", src.own, sent)
	}
}

// A read made for an idle worker is used only by the round that follows the
// offer it answers: once the worker ran a round of its own (woken by its
// timer before the read came), the read is dropped.
func TestRelayReadAheadIsDroppedOnceTheWorkerMoved(t *testing.T) {
	e, err := New(testenv.NewDB(t).DB, testConfig([]string{"127.0.0.1:9"}))
	if err != nil {
		t.Fatal(err)
	}
	w := &shardWorker{src: e.sources[0], shard: 3, floor: 42}
	p := &e.parks[w.src.Name()][w.shard]
	claim := func() *idleAt { return p.idle.Swap(nil) }

	e.park(w)
	i := claim()
	if i == nil || i.from != 42 {
		t.Fatalf("offer %+v, want one from seq 42", i)
	}
	p.gift.Store(&gift{token: i.token, rows: []Row{{Seq: 42}}})
	if g := e.unpark(w); g == nil || len(g.rows) != 1 {
		t.Fatalf("unpark = %+v, want the read made for the offer", g)
	}

	e.park(w)
	i = claim()
	if g := e.unpark(w); g != nil {
		t.Fatalf("unpark before the read came = %+v, want nothing (the worker polls itself)", g)
	}
	p.gift.Store(&gift{token: i.token, rows: []Row{{Seq: 42}}})
	e.park(w)
	if g := e.unpark(w); g != nil {
		t.Fatalf("unpark after a round of its own = %+v, want the late read dropped", g)
	}
}
