package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// testConfig is a Config with timings scaled down for tests.
func testConfig(brokers []string) Config {
	return Config{
		Brokers:         brokers,
		LeaseTTL:        2 * time.Second,
		Heartbeat:       300 * time.Millisecond,
		PollMax:         50 * time.Millisecond,
		RetryInitial:    20 * time.Millisecond,
		RetryMax:        300 * time.Millisecond,
		BacklogInterval: 200 * time.Millisecond,
		ShutdownTimeout: 3 * time.Second,
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("TXMSG_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// running is an Engine started in the background.
type running struct {
	*Engine
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// stop ends the engine gracefully and returns Run's error.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(20 * time.Second):
		t.Fatal("engine did not stop within 20s")
		return nil
	}
}

func startEngine(t *testing.T, db *sql.DB, cfg Config, opts ...Option) *running {
	t.Helper()
	e, err := New(db, cfg, append([]Option{WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Engine: e, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = e.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("engine did not stop within 20s of the test's end")
		}
	})
	return r
}

// publishTx writes msgs through the outbox in one transaction, committing
// or rolling back.
func publishTx(ctx context.Context, db *sql.DB, commit bool, msgs ...txmsg.Message) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := outbox.Publish(ctx, tx, msgs...); err != nil {
		_ = tx.Rollback()
		return err
	}
	if commit {
		return tx.Commit()
	}
	return tx.Rollback()
}

// delivered reads topic and returns its records deduplicated by txmsg-id, in
// first-seen order per partition, and the number of duplicates.
func delivered(ctx context.Context, addrs []string, topic string) ([]kafka.Message, int, error) {
	recs, err := testenv.Records(ctx, addrs, topic)
	if err != nil {
		return nil, 0, err
	}
	seen := map[string]bool{}
	var out []kafka.Message
	dups := 0
	for _, m := range recs {
		id := testenv.HeaderValue(m, txmsg.HeaderID)
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		out = append(out, m)
	}
	return out, dups, nil
}

// waitDelivered waits until topic holds want distinct ids.
func waitDelivered(t *testing.T, addrs []string, topic string, want int, timeout time.Duration) []kafka.Message {
	t.Helper()
	var got []kafka.Message
	testenv.Eventually(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		msgs, _, err := delivered(ctx, addrs, topic)
		if err != nil {
			return err
		}
		got = msgs
		if len(msgs) < want {
			return fmt.Errorf("%d of %d messages delivered", len(msgs), want)
		}
		return nil
	})
	return got
}

// checkOrder verifies that values "key:n" of each key arrive in increasing n,
// that every record of a key sits in one partition, and that none is in
// forbidden.
func checkOrder(t *testing.T, msgs []kafka.Message, forbidden map[string]bool) {
	t.Helper()
	last := map[string]int{}
	part := map[string]int{}
	for _, m := range msgs {
		id := testenv.HeaderValue(m, txmsg.HeaderID)
		if forbidden[id] {
			t.Errorf("message %s of a rolled-back transaction was published", id)
		}
		k, nstr, ok := strings.Cut(string(m.Value), ":")
		if !ok {
			t.Fatalf("unexpected value %q", m.Value)
		}
		n, err := strconv.Atoi(nstr)
		if err != nil {
			t.Fatalf("unexpected value %q", m.Value)
		}
		if p, seen := part[k]; seen && p != m.Partition {
			t.Errorf("key %s in partitions %d and %d", k, p, m.Partition)
		}
		part[k] = m.Partition
		if prev, seen := last[k]; seen && n <= prev {
			t.Errorf("key %s: %d arrived after %d", k, n, prev)
		}
		last[k] = n
	}
}

func countRows(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return n
}

func msg(topic, key string, n int) txmsg.Message {
	return txmsg.Message{Topic: topic, Key: []byte(key), Value: []byte(key + ":" + strconv.Itoa(n))}
}
