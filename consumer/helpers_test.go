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

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/testenv"
)

// fastGroup makes rebalances take a second instead of half a minute.
func fastGroup() Option {
	return WithGroupTimeouts(6*time.Second, 200*time.Millisecond, 6*time.Second, 200*time.Millisecond)
}

// produce writes msgs (Topic set on each) and fails the test on error.
func produce(t testing.TB, addrs []string, msgs ...kafka.Message) {
	t.Helper()
	w, err := kafkax.NewWriter(addrs, kafkax.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce %d messages: %v", len(msgs), err)
	}
}

// record builds a record with a txmsg-id header.
func record(topic, key, id, value string) kafka.Message {
	m := kafka.Message{Topic: topic, Key: []byte(key), Value: []byte(value)}
	if id != "" {
		m.Headers = []kafka.Header{{Key: txmsg.HeaderID, Value: []byte(id)}}
	}
	return m
}

// running is a Consumer's Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs c with h until stop or the test's end.
func start(t testing.TB, c *Consumer, h Handler) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx, h) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run, waits for it and fails the test if Run returned an
// error; it is idempotent.
func (r *running) stop(t testing.TB) {
	t.Helper()
	if err := r.stopErr(t); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// stopErr cancels Run, waits for it and returns its error; it is
// idempotent (nil after the first call).
func (r *running) stopErr(t testing.TB) error {
	t.Helper()
	r.cancel()
	return r.wait(t, 30*time.Second)
}

// wait waits up to timeout for Run to return and returns its error (nil if
// Run returned already).
func (r *running) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
			return err
		}
		return nil
	case <-time.After(timeout):
		t.Fatalf("Run did not return within %v", timeout)
		return nil
	}
}

// refuseCommits makes k refuse every offset commit of group while refuse
// is set, as if the members died before committing.
func refuseCommits(k *testenv.Kafka, group string, refuse *atomic.Bool) {
	k.Cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		oc := req.(*kmsg.OffsetCommitRequest)
		if oc.Group != group || !refuse.Load() {
			return nil, nil, false
		}
		resp := oc.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, t := range oc.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = int16(kafka.GroupAuthorizationFailed)
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
}

// committed returns the group's committed offset of topic/partition (-1
// for none).
func committed(t testing.TB, addrs []string, group, topic string, partition int) int64 {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(addrs...), Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {partition}}})
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	if res.Error != nil {
		t.Fatalf("offset fetch: %v", res.Error)
	}
	for _, p := range res.Topics[topic] {
		if p.Partition == partition {
			return p.CommittedOffset
		}
	}
	return -1
}

// effects is a business table where handlers record their effects.
const createEffects = `CREATE TABLE effects (
  seq    BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  msg_id VARCHAR(320) NOT NULL,
  k      VARCHAR(64) NOT NULL,
  n      INT NOT NULL
)`

func createEffectsTable(t testing.TB, db *sql.DB) {
	t.Helper()
	if _, err := db.Exec(createEffects); err != nil {
		t.Fatalf("create effects: %v", err)
	}
}

// insertEffect is a TxHandlerFunc recording the message; its value is the
// message's sequence number within its key.
func insertEffect(ctx context.Context, tx *sql.Tx, m Message) error {
	n, err := strconv.Atoi(string(m.Value))
	if err != nil {
		return Permanent(fmt.Errorf("value %q: %w", m.Value, err))
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO effects (msg_id, k, n) VALUES (?, ?, ?)`, m.ID, string(m.Key), n)
	return err
}

// checkEffects verifies that want messages have each one effect, and that
// each key's effects are in sequence order.
func checkEffects(db *sql.DB, want int) error {
	var total, distinct int
	if err := db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT msg_id) FROM effects`).Scan(&total, &distinct); err != nil {
		return err
	}
	if total != distinct {
		return fmt.Errorf("%d effects for %d messages: some processed twice", total, distinct)
	}
	if total != want {
		return fmt.Errorf("%d effects, want %d", total, want)
	}
	rows, err := db.Query(`SELECT k, n FROM effects ORDER BY seq`)
	if err != nil {
		return err
	}
	defer rows.Close()
	last := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			return err
		}
		if prev, ok := last[k]; ok && n != prev+1 {
			return fmt.Errorf("key %s: effect %d after %d", k, n, prev)
		}
		last[k] = n
	}
	return rows.Err()
}

// recorder is a hook that counts.
type recorder struct {
	mu                                             sync.Mutex
	consumed, dup, failed, retried, dead, observed int
	lag                                            map[int]int64
}

func (r *recorder) add(p *int) { r.mu.Lock(); *p++; r.mu.Unlock() }

func (r *recorder) Consumed(string, string, int)                 { r.add(&r.consumed) }
func (r *recorder) Duplicate(string, string)                     { r.add(&r.dup) }
func (r *recorder) Failed(string, string)                        { r.add(&r.failed) }
func (r *recorder) Retried(string, string)                       { r.add(&r.retried) }
func (r *recorder) DeadLettered(string, string)                  { r.add(&r.dead) }
func (r *recorder) HandlerLatency(string, string, time.Duration) { r.add(&r.observed) }
func (r *recorder) Lag(_ string, _ string, partition int, l int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lag == nil {
		r.lag = map[int]int64{}
	}
	r.lag[partition] = l
}

func (r *recorder) get(p *int) int { r.mu.Lock(); defer r.mu.Unlock(); return *p }

var errBoom = errors.New("boom")

func newDB(t testing.TB) *sql.DB {
	t.Helper()
	return testenv.NewDB(t).DB
}
