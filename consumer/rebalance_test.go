package consumer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
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

// TestConsumerRebalanceDropsRevokedWork: member a holds partition 1 with a
// handler stuck on its first message and 19 more buffered behind it; b
// joins and takes the partition. a must not handle the buffered messages
// of the partition it lost, nor commit an offset for it later: a low
// watermark committed by a would rewind b, which is already past it.
func TestConsumerRebalanceDropsRevokedWork(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 2)
	const topic, group = "ledger", "audit"
	producePartition(t, k.Addrs, topic, 1, 0, 20)
	// Partition 0 is a's, 1 is b's; while b is away a holds both.
	assignments := map[string][]int{"a": {0}, "b": {1}}
	member := func(name string, h HandlerFunc) *running {
		c, err := New(k.Addrs, group, []string{topic}, fastGroup(), WithDrainTimeout(500*time.Millisecond),
			WithCommitInterval(20*time.Millisecond), WithBalancers(StaticBalancer{Member: name, Assignments: assignments}))
		if err != nil {
			t.Fatal(err)
		}
		return start(t, c, h)
	}
	var aSeen, bSeen offsetLog
	stuck, release := make(chan struct{}), make(chan struct{})
	a := member("a", func(ctx context.Context, m Message) error {
		aSeen.add(m)
		if m.Partition == 1 && m.Offset == 0 {
			close(stuck)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	select {
	case <-stuck:
	case <-time.After(30 * time.Second):
		t.Fatal("member a never handled partition 1")
	}
	b := member("b", func(_ context.Context, m Message) error { bSeen.add(m); return nil })
	waitCommitted(t, k.Addrs, group, topic, 1, 20)
	producePartition(t, k.Addrs, topic, 1, 20, 30)
	waitCommitted(t, k.Addrs, group, topic, 1, 30)
	close(release)
	// a still owns partition 0: once it handled a message there, anything
	// it would do with partition 1's buffered messages has been done too.
	producePartition(t, k.Addrs, topic, 0, 0, 1)
	testenv.Eventually(t, 30*time.Second, func() error {
		if len(aSeen.of(0)) == 0 {
			return errors.New("a has not handled the message on partition 0")
		}
		return nil
	})
	a.stop(t)
	b.stop(t)
	if off := committed(t, k.Addrs, group, topic, 1); off != 30 {
		t.Fatalf("partition 1 committed at %d after a stopped, want 30: a rewound it", off)
	}
	if got := aSeen.of(1); len(got) != 1 {
		t.Fatalf("a handled offsets %v of partition 1, want only 0: it kept working a revoked partition", got)
	}
	if got := bSeen.of(1); len(got) != 30 || got[0] != 0 || got[29] != 29 {
		t.Fatalf("b handled offsets %v of partition 1, want 0..29", got)
	}
}

// producePartition writes messages from..to-1 (values n, key "k") to
// partition of topic.
func producePartition(t testing.TB, addrs []string, topic string, partition, from, to int) {
	t.Helper()
	var msgs []kafka.Message
	for n := from; n < to; n++ {
		msgs = append(msgs, kafka.Message{Topic: topic, Partition: partition, Key: []byte("k"), Value: []byte(strconv.Itoa(n))})
	}
	producePartitions(t, addrs, msgs)
}

// waitCommitted waits until group's committed offset of topic/partition is
// want.
func waitCommitted(t testing.TB, addrs []string, group, topic string, partition int, want int64) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() error {
		if off := committed(t, addrs, group, topic, partition); off != want {
			return fmt.Errorf("%s/%d committed at %d, want %d", topic, partition, off, want)
		}
		return nil
	})
}

// offsetLog records the offsets a handler saw, by partition.
type offsetLog struct {
	mu   sync.Mutex
	seen map[int][]int64
}

func (l *offsetLog) add(m Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[int][]int64{}
	}
	l.seen[m.Partition] = append(l.seen[m.Partition], m.Offset)
}

// of returns the distinct offsets seen of partition, sorted.
func (l *offsetLog) of(partition int) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.seen[partition])
	slices.Sort(out)
	return slices.Compact(out)
}
