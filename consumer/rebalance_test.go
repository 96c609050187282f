package consumer

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/testenv"
)

// TestConsumerRebalanceUnderLoad: while messages keep arriving, a second
// and a third member join and the first leaves. Every message's effect
// exists once (the inbox absorbs redeliveries) and each key's effects are
// in order.
func TestConsumerRebalanceUnderLoad(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	k := testenv.NewKafka(t, 6)
	createEffectsTable(t, db)
	const topic, group, keys = "stock", "warehouse", 24
	next := make([]int, keys)
	total := 0
	batch := func(perKey int) {
		var msgs []kafka.Message
		for i := 0; i < perKey; i++ {
			for key := 0; key < keys; key++ {
				msgs = append(msgs, record(topic, "k"+strconv.Itoa(key), fmt.Sprintf("m-%d-%d", key, next[key]), strconv.Itoa(next[key])))
				next[key]++
			}
		}
		produce(t, k.Addrs, msgs...)
		total += len(msgs)
	}
	var handled atomic.Int64
	// A handler slow enough that each member has work in flight when the
	// group rebalances.
	var perMember [3]atomic.Int64
	member := func(i int) *running {
		name := "m" + strconv.Itoa(i+1)
		h := TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, m Message) error {
			handled.Add(1)
			perMember[i].Add(1)
			time.Sleep(time.Millisecond)
			return insertEffect(ctx, tx, m)
		})
		c, err := New(k.Addrs, group, []string{topic}, WithInbox(db), fastGroup(), WithConcurrency(4),
			WithCommitInterval(50*time.Millisecond), WithStrategy(StrategyRoundRobin, BalancerConfig{Member: name}))
		if err != nil {
			t.Fatal(err)
		}
		return start(t, c, h)
	}
	// waitHandled waits until the members have made progress past n.
	waitHandled := func(n int64) {
		testenv.Eventually(t, 30*time.Second, func() error {
			if got := handled.Load(); got < n {
				return fmt.Errorf("%d handled, want > %d", got, n)
			}
			return nil
		})
	}

	batch(20)
	first := member(0)
	waitHandled(100)
	batch(20)
	member(1)
	waitHandled(int64(total) / 2)
	batch(20)
	member(2)
	batch(20)
	waitHandled(int64(total) * 3 / 4)
	first.stop(t)
	batch(20)
	testenv.Eventually(t, 45*time.Second, func() error { return checkEffects(db, total) })
	for i := range perMember {
		if perMember[i].Load() == 0 {
			t.Errorf("member m%d handled nothing: the group did not rebalance to it", i+1)
		}
	}
}
