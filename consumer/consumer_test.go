package consumer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

func TestConsumerNewRejectsBadInput(t *testing.T) {
	t.Parallel()
	brokers := []string{"127.0.0.1:9092"}
	cases := []struct {
		name    string
		brokers []string
		group   string
		topics  []string
		opts    []Option
	}{
		{"no brokers", nil, "g", []string{"t"}, nil},
		{"bad broker", []string{"nohost"}, "g", []string{"t"}, nil},
		{"empty group", brokers, "", []string{"t"}, nil},
		{"no topics", brokers, "g", nil, nil},
		{"empty topic", brokers, "g", []string{""}, nil},
		{"bad topic", brokers, "g", []string{"a b"}, nil},
		{"group unfit for dlq topic", brokers, "g/1", []string{"t"}, nil},
		{"unknown strategy", brokers, "g", []string{"t"}, []Option{WithStrategy("sticky", BalancerConfig{})}},
		{"static without map", brokers, "g", []string{"t"}, []Option{WithStrategy("static", BalancerConfig{})}},
		{"rack without rack", brokers, "g", []string{"t"}, []Option{WithStrategy("rack", BalancerConfig{})}},
		{"nil option", brokers, "g", []string{"t"}, []Option{nil}},
		{"zero concurrency", brokers, "g", []string{"t"}, []Option{WithConcurrency(0)}},
		{"zero attempts", brokers, "g", []string{"t"}, []Option{WithMaxAttempts(0)}},
		{"zero purge interval", brokers, "g", []string{"t"}, []Option{WithInboxRetention(time.Hour, 0, 10)}},
		{"zero purge batch", brokers, "g", []string{"t"}, []Option{WithInboxRetention(time.Hour, time.Hour, 0)}},
		{"purge batch past its bound", brokers, "g", []string{"t"}, []Option{WithInboxRetention(time.Hour, time.Hour, MaxPurgeBatch+1)}},
		{"zero in-flight messages", brokers, "g", []string{"t"}, []Option{WithInFlightLimit(0, 1<<20)}},
		{"zero in-flight bytes", brokers, "g", []string{"t"}, []Option{WithInFlightLimit(100, 0)}},
		{"nil inbox db", brokers, "g", []string{"t"}, []Option{WithInbox(nil)}},
		{"nil balancer", brokers, "g", []string{"t"}, []Option{WithBalancers(nil)}},
		{"negative rate", brokers, "g", []string{"t"}, []Option{WithRateLimit(-1, 1)}},
		{"zero retry delay", brokers, "g", []string{"t"}, []Option{WithRetryTiers(time.Second, 0)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.brokers, tc.group, tc.topics, tc.opts...)
			if err == nil || c != nil {
				t.Fatalf("New = %v, %v; want an error", c, err)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
	_, err := BalancerByName("sticky", BalancerConfig{})
	if !errors.Is(err, ErrUnknownStrategy) {
		t.Fatalf("BalancerByName(sticky) = %v, want ErrUnknownStrategy", err)
	}

	c, err := New(brokers, "g", []string{"t"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, h := range map[string]Handler{
		"nil":                    nil,
		"nil HandlerFunc":        HandlerFunc(nil),
		"nil TxHandlerFunc":      TxHandlerFunc(nil),
		"TxHandlerFunc no inbox": TxHandlerFunc(func(context.Context, *sql.Tx, Message) error { return nil }),
	} {
		if err := c.Run(ctx, h); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Run(%s) = %v, want ErrInvalidConfig", name, err)
		}
	}
}

// TestConsumerInboxDedupesDuplicates: the same txmsg-id produced three
// times, and a consumer whose offset commits the broker all refuses, as if
// it died after its transactions but before committing; a second consumer
// of the group reads everything again. Each message's effect exists once.
func TestConsumerInboxDedupesDuplicates(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	k := testenv.NewKafka(t, 3)
	createEffectsTable(t, db)
	const topic, group, keys, perKey = "orders", "billing", 10, 5
	var msgs []kafka.Message
	for n := 0; n < perKey; n++ {
		for key := 0; key < keys; key++ {
			id := fmt.Sprintf("id-%d-%d", key, n)
			for copyNo := 0; copyNo < 3; copyNo++ {
				msgs = append(msgs, record(topic, "k"+strconv.Itoa(key), id, strconv.Itoa(n)))
			}
		}
	}
	produce(t, k.Addrs, msgs...)

	// First consumer: handles everything, commits no offset, then "dies".
	var refuse atomic.Bool
	refuse.Store(true)
	refuseCommits(k, group, &refuse)
	first, err := New(k.Addrs, group, []string{topic}, WithInbox(db), fastGroup(), WithConcurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	r1 := start(t, first, TxHandlerFunc(insertEffect))
	testenv.Eventually(t, 30*time.Second, func() error { return checkEffects(db, keys*perKey) })
	if err := r1.stopErr(t); err == nil {
		t.Fatal("Run returned nil though its final commit was refused")
	}
	refuse.Store(false)
	for p := 0; p < 3; p++ {
		if off := committed(t, k.Addrs, group, topic, p); off >= 0 {
			t.Fatalf("partition %d committed at %d by the killed consumer", p, off)
		}
	}

	// Second consumer: sees every record again and skips them all.
	m := &recorder{}
	second, err := New(k.Addrs, group, []string{topic}, WithInbox(db), fastGroup(), WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	r2 := start(t, second, TxHandlerFunc(insertEffect))
	testenv.Eventually(t, 30*time.Second, func() error {
		if got := m.get(&m.dup); got != len(msgs) {
			return fmt.Errorf("%d duplicates skipped, want %d", got, len(msgs))
		}
		return nil
	})
	r2.stop(t)
	if err := checkEffects(db, keys*perKey); err != nil {
		t.Fatal(err)
	}
	var total int64
	for p := 0; p < 3; p++ {
		total += committed(t, k.Addrs, group, topic, p)
	}
	if total != int64(len(msgs)) {
		t.Fatalf("committed offsets sum to %d, want %d", total, len(msgs))
	}
}

// TestConsumerRetryKeepsKeyOrder: a handler that fails twice then succeeds
// handles the message once, and the key's later messages wait for it.
func TestConsumerRetryKeepsKeyOrder(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 2)
	const topic = "events"
	const trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var msgs []kafka.Message
	for n := 0; n < 6; n++ {
		m := record(topic, "k", "", strconv.Itoa(n))
		m.Headers = append(m.Headers, kafka.Header{Key: HeaderTraceParent, Value: []byte(trace)})
		msgs = append(msgs, m)
	}
	produce(t, k.Addrs, msgs...)

	var mu sync.Mutex
	var order []int
	attempts := map[int]int{}
	traces := 0
	m := &recorder{}
	c, err := New(k.Addrs, "g", []string{topic}, fastGroup(), WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		WithMaxAttempts(5), WithConcurrency(4), WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, HandlerFunc(func(ctx context.Context, msg Message) error {
		n, _ := strconv.Atoi(string(msg.Value))
		mu.Lock()
		defer mu.Unlock()
		attempts[n]++
		if attempts[n] != msg.Attempt {
			return Permanent(fmt.Errorf("message %d: Attempt %d, calls %d", n, msg.Attempt, attempts[n]))
		}
		if TraceParent(ctx) == trace {
			traces++
		}
		if n == 2 && msg.Attempt < 3 {
			return errBoom
		}
		if n == 4 && msg.Attempt == 1 {
			panic("handler bug")
		}
		order = append(order, n)
		return nil
	}))
	testenv.Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(order) < 6 {
			return fmt.Errorf("handled %v", order)
		}
		return nil
	})
	r.stop(t)
	mu.Lock()
	defer mu.Unlock()
	for i, n := range order {
		if n != i {
			t.Fatalf("order %v, want 0..5", order)
		}
	}
	if attempts[2] != 3 || attempts[4] != 2 || len(order) != 6 {
		t.Fatalf("attempts %v, order %v: want message 2 tried 3 times, 4 (panicking once) twice, each handled once", attempts, order)
	}
	if traces != 9 {
		t.Fatalf("traceparent on %d handler contexts, want 9", traces)
	}
	if m.get(&m.retried) != 3 || m.get(&m.failed) != 3 || m.get(&m.consumed) != 6 || m.get(&m.dead) != 0 {
		t.Fatalf("metrics %+v", m)
	}
}

// TestConsumerDeadLetters: a message that always fails lands in the DLQ
// with its headers after the attempts, a Permanent error after one
// attempt, and other keys are not held up meanwhile.
func TestConsumerDeadLetters(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	const topic, group, conc = "payments", "ledger", 8
	lane := func(key string) int {
		return (&run{c: &Consumer{o: options{concurrency: conc}}}).laneIndex(&Message{Partition: 0, Offset: 0, Message: msgWithKey(key)})
	}
	var good []string
	for i := 0; len(good) < 20; i++ {
		key := "good" + strconv.Itoa(i)
		if lane(key) != lane("bad") && lane(key) != lane("perm") {
			good = append(good, key)
		}
	}
	msgs := []kafka.Message{record(topic, "bad", "bad-1", "0"), record(topic, "perm", "perm-1", "0")}
	for _, key := range good {
		msgs = append(msgs, record(topic, key, key, "0"))
	}
	produce(t, k.Addrs, msgs...)

	var goodDone atomic.Int64
	var goodLast atomic.Int64
	var badLast atomic.Int64
	m := &recorder{}
	c, err := New(k.Addrs, group, []string{topic}, fastGroup(), WithConcurrency(conc), WithMaxAttempts(4),
		WithBackoff(100*time.Millisecond, 200*time.Millisecond), WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, HandlerFunc(func(ctx context.Context, msg Message) error {
		switch string(msg.Key) {
		case "bad":
			badLast.Store(time.Now().UnixNano())
			return fmt.Errorf("attempt %d: %w", msg.Attempt, errBoom)
		case "perm":
			return Permanent(errors.New("cannot parse"))
		}
		goodDone.Add(1)
		goodLast.Store(time.Now().UnixNano())
		return nil
	}))
	dlq := topic + "." + group + ".dlq"
	var recs []kafka.Message
	testenv.Eventually(t, 20*time.Second, func() error {
		var err error
		recs, err = testenv.Records(context.Background(), k.Addrs, dlq)
		if err != nil {
			return err
		}
		if len(recs) != 2 {
			return fmt.Errorf("%d dead letters", len(recs))
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		if committed(t, k.Addrs, group, topic, 0) != int64(len(msgs)) {
			return errors.New("offsets not committed past the dead letters")
		}
		return nil
	})
	r.stop(t)
	if goodDone.Load() != int64(len(good)) {
		t.Fatalf("%d good messages handled, want %d", goodDone.Load(), len(good))
	}
	if goodLast.Load() >= badLast.Load() {
		t.Fatal("good messages finished after the failing message's last attempt: other keys were held up")
	}
	want := map[string]map[string]string{
		"bad":  {HeaderDLQTopic: topic, HeaderDLQPartition: "0", HeaderDLQOffset: "0", HeaderDLQAttempts: "4", HeaderDLQGroup: group, "txmsg-id": "bad-1"},
		"perm": {HeaderDLQTopic: topic, HeaderDLQPartition: "0", HeaderDLQOffset: "1", HeaderDLQAttempts: "1", HeaderDLQGroup: group, "txmsg-id": "perm-1"},
	}
	for _, rec := range recs {
		for h, v := range want[string(rec.Key)] {
			if got := testenv.HeaderValue(rec, h); got != v {
				t.Errorf("dead letter %s: header %s = %q, want %q", rec.Key, h, got, v)
			}
		}
		if testenv.HeaderValue(rec, HeaderDLQError) == "" {
			t.Errorf("dead letter %s: no error header", rec.Key)
		}
	}
	if m.get(&m.dead) != 2 || m.get(&m.retried) != 3 {
		t.Fatalf("metrics: dead %d retried %d, want 2 and 3", m.get(&m.dead), m.get(&m.retried))
	}
}

// TestConsumerGracefulShutdown: on shutdown a handler already running
// finishes within the drain timeout and is committed; one that outlives it
// is canceled and not committed; messages not started are not committed.
func TestConsumerGracefulShutdown(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		finishes   bool
		wantOffset int64
	}{
		{"in-flight handler finishes", true, 4},
		{"in-flight handler outlives drain", false, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k := testenv.NewKafka(t, 1)
			var msgs []kafka.Message
			for n := 0; n < 10; n++ {
				msgs = append(msgs, record("jobs", "k", "", strconv.Itoa(n)))
			}
			produce(t, k.Addrs, msgs...)
			started := make(chan struct{})
			release := make(chan struct{})
			releaseHandler := sync.OnceFunc(func() { close(release) })
			var handled atomic.Int64
			c, err := New(k.Addrs, "workers", []string{"jobs"}, fastGroup(), WithDrainTimeout(500*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			r := start(t, c, HandlerFunc(func(ctx context.Context, m Message) error {
				if m.Offset == 3 {
					close(started)
					<-release
					if tc.finishes {
						handled.Add(1)
						return nil
					}
					<-ctx.Done()
					return ctx.Err()
				}
				handled.Add(1)
				return nil
			}))
			// Registered after start's, so it runs before the consumer is
			// stopped: a test that failed early leaves no handler blocked.
			t.Cleanup(releaseHandler)
			select {
			case <-started:
			case <-time.After(20 * time.Second):
				t.Fatal("handler of offset 3 never started")
			}
			r.cancel()
			releaseHandler()
			r.stop(t)
			if got := committed(t, k.Addrs, "workers", "jobs", 0); got != tc.wantOffset {
				t.Fatalf("committed offset %d, want %d", got, tc.wantOffset)
			}
			if handled.Load() != tc.wantOffset {
				t.Fatalf("%d handled, want %d", handled.Load(), tc.wantOffset)
			}
		})
	}
}

func msgWithKey(key string) (m txmsg.Message) {
	m.Key = []byte(key)
	return m
}

// A transaction InnoDB rolls back over a deadlock is run again without
// spending an attempt: more conflicts than WithMaxAttempts still end in one
// effect, not in the dead-letter topic.
func TestConsumerTransactionConflictsSpendNoAttempt(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	db := newDB(t)
	createEffectsTable(t, db)
	const topic = "conflicts"
	produce(t, k.Addrs, record(topic, "k", "id-1", "1"))
	var mu sync.Mutex
	calls := 0
	var attempts []int
	m := &recorder{}
	c, err := New(k.Addrs, "g", []string{topic}, fastGroup(), WithInbox(db), WithMaxAttempts(2),
		WithBackoff(5*time.Millisecond, 20*time.Millisecond), WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, msg Message) error {
		mu.Lock()
		calls++
		attempts = append(attempts, msg.Attempt)
		conflict := calls <= 4
		mu.Unlock()
		if err := insertEffect(ctx, tx, msg); err != nil {
			return err
		}
		if conflict {
			return fmt.Errorf("update stock: %w", &mysql.MySQLError{Number: 1213, Message: "Deadlock found"})
		}
		return nil
	}))
	testenv.Eventually(t, 20*time.Second, func() error { return checkEffects(db, 1) })
	r.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if calls != 5 || m.get(&m.dead) != 0 {
		t.Fatalf("%d calls, %d dead-lettered: want 5 calls (4 conflicts, then success) and none dead-lettered", calls, m.get(&m.dead))
	}
	for _, a := range attempts {
		if a != 1 {
			t.Fatalf("attempts %v: conflicts must not spend attempts", attempts)
		}
	}
}
