package consumer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/txmsg/txmsg/internal/testenv"
)

// newKafkaNoAutoCreate starts a kfake cluster that creates topics only on
// request (CreateTopics), as production clusters are usually set up, with
// topics seeded with partitions each.
func newKafkaNoAutoCreate(t testing.TB, partitions int32, topics ...string) *testenv.Kafka {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(int(partitions)),
		kfake.SeedTopics(partitions, topics...), kfake.Ports(0))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &testenv.Kafka{Cluster: c, Addrs: c.ListenAddrs()}
}

// partitionsOf returns how many partitions topic has.
func partitionsOf(t testing.TB, addrs []string, topic string) int {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(addrs...), Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		t.Fatalf("metadata of %s: %+v", topic, meta.Topics)
	}
	return len(meta.Topics[0].Partitions)
}

// TestConsumerCreatesDeadLetterTopic: on a cluster without topic
// auto-creation, Run creates the dead-letter topic (with the partitions of
// its origin), so the first dead letter is written and its partition moves
// on instead of stalling.
func TestConsumerCreatesDeadLetterTopic(t *testing.T) {
	t.Parallel()
	const topic, group = "payments", "ledger"
	cases := []struct {
		name string
		opts []Option
		dlq  string
	}{
		{"default name", nil, topic + "." + group + ".dlq"},
		{"WithDeadLetterTopic", []Option{WithDeadLetterTopic("dead-letters")}, "dead-letters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k := newKafkaNoAutoCreate(t, 2, topic)
			var msgs []kafka.Message
			for n := 0; n < 10; n++ {
				msgs = append(msgs, record(topic, "k"+strconv.Itoa(n%3), "id-"+strconv.Itoa(n), strconv.Itoa(n)))
			}
			produce(t, k.Addrs, msgs...)
			opts := append([]Option{fastGroup()}, tc.opts...)
			c, err := New(k.Addrs, group, []string{topic}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			start(t, c, HandlerFunc(func(_ context.Context, m Message) error {
				if m.ID == "id-4" {
					return Permanent(errors.New("cannot parse"))
				}
				return nil
			}))
			testenv.Eventually(t, 20*time.Second, func() error {
				recs, err := testenv.Records(context.Background(), k.Addrs, tc.dlq)
				if err != nil {
					return err
				}
				if len(recs) != 1 || testenv.HeaderValue(recs[0], "txmsg-id") != "id-4" {
					return fmt.Errorf("%d dead letters in %s, want id-4", len(recs), tc.dlq)
				}
				// A partition without messages has no commit (-1).
				if sum := max(0, committed(t, k.Addrs, group, topic, 0)) + max(0, committed(t, k.Addrs, group, topic, 1)); sum != int64(len(msgs)) {
					return fmt.Errorf("committed offsets sum to %d, want %d", sum, len(msgs))
				}
				return nil
			})
			if n := partitionsOf(t, k.Addrs, tc.dlq); n != 2 {
				t.Fatalf("dead-letter topic %s has %d partitions, want the 2 of %s", tc.dlq, n, topic)
			}
		})
	}
}

// TestConsumerRunFailsWhenDeadLetterTopicRefused: when the cluster refuses
// to create the dead-letter topic, Run fails at once with an error naming
// the topic and the permission, instead of stalling at the first dead
// letter.
func TestConsumerRunFailsWhenDeadLetterTopicRefused(t *testing.T) {
	t.Parallel()
	const topic, group = "payments", "ledger"
	k := newKafkaNoAutoCreate(t, 1, topic)
	k.Cluster.ControlKey(int16(kmsg.CreateTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		ct := req.(*kmsg.CreateTopicsRequest)
		resp := ct.ResponseKind().(*kmsg.CreateTopicsResponse)
		for _, rt := range ct.Topics {
			st := kmsg.NewCreateTopicsResponseTopic()
			st.Topic = rt.Topic
			st.ErrorCode = int16(kafka.TopicAuthorizationFailed)
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	c, err := New(k.Addrs, group, []string{topic}, fastGroup())
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, HandlerFunc(func(context.Context, Message) error { return nil }))
	err = r.wait(t, 10*time.Second)
	if err == nil || !errors.Is(err, kafka.TopicAuthorizationFailed) {
		t.Fatalf("Run = %v, want a topic authorization error", err)
	}
	for _, want := range []string{topic + "." + group + ".dlq", "CREATE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run's error %q does not name %q", err, want)
		}
	}
}

// TestConsumerGivesUpOnDeadLetterWrites: when Kafka keeps refusing a dead
// letter, Run stops with ErrStuck after its bounded retries, and the
// message's offset is not committed: it comes again on the next Run.
func TestConsumerGivesUpOnDeadLetterWrites(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	const topic, group = "payments", "ledger"
	dlq := topic + "." + group + ".dlq"
	var refused atomic.Int64
	k.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if len(pr.Topics) != 1 || pr.Topics[0].Topic != dlq {
			return nil, nil, false
		}
		refused.Add(1)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = dlq
		for _, p := range pr.Topics[0].Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition = p.Partition
			rp.ErrorCode = int16(kafka.TopicAuthorizationFailed)
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})
	produce(t, k.Addrs, record(topic, "k", "ok", "0"), record(topic, "k", "bad", "1"), record(topic, "k", "later", "2"))
	c, err := New(k.Addrs, group, []string{topic}, fastGroup(), WithBackoff(time.Millisecond, 5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	var later atomic.Bool
	r := start(t, c, HandlerFunc(func(_ context.Context, m Message) error {
		switch m.ID {
		case "bad":
			return Permanent(errors.New("cannot parse"))
		case "later":
			later.Store(true)
		}
		return nil
	}))
	err = r.wait(t, 30*time.Second)
	if !errors.Is(err, ErrStuck) || !strings.Contains(err.Error(), "Topic Authorization Failed") {
		t.Fatalf("Run = %v, want ErrStuck with the refusal", err)
	}
	if got := refused.Load(); got != maxTransientRetries+1 {
		t.Errorf("%d dead-letter writes refused, want %d", got, maxTransientRetries+1)
	}
	if off := committed(t, k.Addrs, group, topic, 0); off != 1 {
		t.Fatalf("committed offset %d, want 1: the stuck message must come again", off)
	}
	if later.Load() {
		t.Fatal("the message after the stuck one of its key was handled")
	}
}

// TestConsumerGivesUpOnTransactionConflicts: a transaction that conflicts
// on every try is retried a bounded number of times, then Run stops with
// ErrStuck, without an effect and without committing the message.
func TestConsumerGivesUpOnTransactionConflicts(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	db := newDB(t)
	createEffectsTable(t, db)
	const topic, group = "stock", "warehouse"
	produce(t, k.Addrs, record(topic, "k", "a", "1"), record(topic, "k", "b", "1"))
	var mu sync.Mutex
	calls := map[string]int{}
	c, err := New(k.Addrs, group, []string{topic}, fastGroup(), WithInbox(db), WithBackoff(time.Millisecond, 2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, m Message) error {
		mu.Lock()
		calls[m.ID]++
		mu.Unlock()
		if err := insertEffect(ctx, tx, m); err != nil {
			return err
		}
		if m.ID == "b" {
			return fmt.Errorf("update stock: %w", &mysql.MySQLError{Number: 1205, Message: "Lock wait timeout exceeded"})
		}
		return nil
	}))
	err = r.wait(t, 30*time.Second)
	if !errors.Is(err, ErrStuck) {
		t.Fatalf("Run = %v, want ErrStuck", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["b"] != maxTransientRetries+1 {
		t.Errorf("conflicting message tried %d times, want %d", calls["b"], maxTransientRetries+1)
	}
	if err := checkEffects(db, 1); err != nil {
		t.Fatal(err)
	}
	if off := committed(t, k.Addrs, group, topic, 0); off != 1 {
		t.Fatalf("committed offset %d, want 1: the stuck message must come again", off)
	}
}

// TestConsumerInFlightLimit: while one key is stuck, its partition stops
// fetching once the messages fetched behind it reach the in-flight limit
// (by count, or by bytes), however many wait in Kafka; when the key moves
// on, everything is handled and committed.
func TestConsumerInFlightLimit(t *testing.T) {
	t.Parallel()
	const conc = 2
	cases := []struct {
		name     string
		opts     []Option
		others   int
		value    int
		maxMsgs  int
		maxBytes int64
	}{
		{"default message limit", nil, 10100, 1, 10000, 64 << 20},
		{"byte limit", []Option{WithInFlightLimit(1000000, 64<<10)}, 300, 1024, 1000000, 64 << 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k := testenv.NewKafka(t, 1)
			const topic, group = "orders", "billing"
			// Keys as long as "stuck", all in the lane it is not in.
			keys := keysBesideLane(conc, "stuck", 50)
			value := strings.Repeat("v", tc.value)
			msgs := []kafka.Message{{Topic: topic, Key: []byte("stuck"), Value: []byte(value)}}
			for i := 0; i < tc.others; i++ {
				msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte(keys[i%len(keys)]), Value: []byte(value)})
			}
			for i := 0; i < len(msgs); i += 5000 {
				produce(t, k.Addrs, msgs[i:min(i+5000, len(msgs))]...)
			}
			// The stuck message and the ones after it weigh size each: the
			// partition stops fetching when they reach the limit.
			size := int64(len("stuck") + tc.value)
			inFlight := min(tc.maxMsgs, int((tc.maxBytes+size-1)/size))
			pauseAt := int64(inFlight - 1)

			release := make(chan struct{})
			var released atomic.Bool
			var handled, beyond atomic.Int64
			c, err := New(k.Addrs, group, []string{topic}, append([]Option{fastGroup(), WithConcurrency(conc)}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			r := start(t, c, HandlerFunc(func(ctx context.Context, m Message) error {
				if string(m.Key) == "stuck" {
					select {
					case <-release:
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				if n := handled.Add(1); n > pauseAt && !released.Load() {
					beyond.Store(n)
				}
				return nil
			}))
			testenv.Eventually(t, 60*time.Second, func() error {
				if n := handled.Load(); n < pauseAt {
					return fmt.Errorf("%d messages handled behind the stuck one, want %d", n, pauseAt)
				}
				return nil
			})
			released.Store(true)
			close(release)
			if n := beyond.Load(); n != 0 {
				t.Fatalf("%d messages fetched behind the stuck one, want at most %d: fetching did not pause", n+1, inFlight)
			}
			testenv.Eventually(t, 60*time.Second, func() error {
				if off := committed(t, k.Addrs, group, topic, 0); off != int64(len(msgs)) {
					return fmt.Errorf("committed offset %d, want %d", off, len(msgs))
				}
				return nil
			})
			r.stop(t)
			if n := handled.Load(); n != int64(tc.others) {
				t.Fatalf("%d messages handled, want %d", n, tc.others)
			}
		})
	}
}

// keysBesideLane returns n keys of five bytes that, with conc lanes, all go
// to another lane than key.
func keysBesideLane(conc int, key string, n int) []string {
	r := &run{c: &Consumer{o: options{concurrency: conc}}}
	lane := func(k string) int { return r.laneIndex(&Message{Message: msgWithKey(k)}) }
	var keys []string
	for i := 0; len(keys) < n; i++ {
		if k := fmt.Sprintf("k%04d", i); lane(k) != lane(key) {
			keys = append(keys, k)
		}
	}
	return keys
}
