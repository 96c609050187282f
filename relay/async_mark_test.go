package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/testenv"
)

// gatedOutbox is the outbox source whose marks wait for gate while hold is
// set; the first mark to get past it while failOnce is set fails.
type gatedOutbox struct {
	*OutboxSource
	hold, failOnce atomic.Bool
	waiting        atomic.Int32
	gate           chan struct{}
	open           func() // closes gate, once
	marked         chan struct{}
	// afterRead, when set, runs once after a poll read rows and before it
	// returns them.
	afterRead atomic.Pointer[func()]
}

func (s *gatedOutbox) Pending(ctx context.Context, q Querier, shard int, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.Pending(ctx, q, shard, limit)
	s.hook(rows)
	return rows, err
}

func (s *gatedOutbox) PendingFrom(ctx context.Context, q Querier, shard int, from int64, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.PendingFrom(ctx, q, shard, from, limit)
	s.hook(rows)
	return rows, err
}

// hook runs afterRead after a read that found rows (other shards' workers
// poll too, and find none).
func (s *gatedOutbox) hook(rows []Row) {
	if len(rows) == 0 {
		return
	}
	if f := s.afterRead.Swap(nil); f != nil {
		(*f)()
	}
}

func (s *gatedOutbox) Delivered(ctx context.Context, e Execer, rows []Row) error {
	if s.hold.Load() {
		s.waiting.Add(1)
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.failOnce.CompareAndSwap(true, false) {
		return errors.New("marking refused by the test")
	}
	err := s.OutboxSource.Delivered(ctx, e, rows)
	select {
	case s.marked <- struct{}{}:
	default:
	}
	return err
}

func newGatedOutbox(t *testing.T) *gatedOutbox {
	s := &gatedOutbox{OutboxSource: NewOutboxSource(false), gate: make(chan struct{}), marked: make(chan struct{}, 1)}
	s.open = sync.OnceFunc(func() { close(s.gate) })
	t.Cleanup(s.open)
	return s
}

// gatedRelay is an engine over a gatedOutbox whose marks wait (hold set),
// and the database and Kafka it works with.
type gatedRelay struct {
	*running
	t   *testing.T
	d   *testenv.Database
	k   *testenv.Kafka
	src *gatedOutbox
}

// startGated starts a gatedRelay on one-partition Kafka. A mark may wait
// until the lease runs out: a minute, far longer than the tests.
func startGated(t *testing.T, opts ...func(*Config)) *gatedRelay {
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	cfg := testConfig(k.Addrs)
	cfg.LeaseTTL = time.Minute
	for _, o := range opts {
		o(&cfg)
	}
	src := newGatedOutbox(t)
	src.hold.Store(true)
	return &gatedRelay{running: startEngine(t, d.DB, cfg, WithSources(src)), t: t, d: d, k: k, src: src}
}

// publish commits the n-th message of key "k" to "accounts" and waits
// until n messages were delivered.
func (g *gatedRelay) publish(n int) []kafka.Message {
	g.t.Helper()
	if err := publishTx(context.Background(), g.d.DB, true, msg("accounts", "k", n)); err != nil {
		g.t.Fatal(err)
	}
	return waitDelivered(g.t, g.k.Addrs, "accounts", n, 20*time.Second)
}

// waitMarkHeld waits until a mark waits on the gate.
func (g *gatedRelay) waitMarkHeld() {
	g.t.Helper()
	testenv.Eventually(g.t, 20*time.Second, func() error {
		if g.src.waiting.Load() == 0 {
			return errors.New("no mark has started")
		}
		return nil
	})
}

// waitDrained waits until the outbox is empty, and returns the messages
// delivered and how many were duplicates.
func (g *gatedRelay) waitDrained(timeout time.Duration) ([]kafka.Message, int) {
	g.t.Helper()
	testenv.Eventually(g.t, timeout, func() error {
		if n := countRows(g.t, g.d.DB, "SELECT COUNT(*) FROM txmsg_outbox"); n != 0 {
			return fmt.Errorf("%d rows still in the outbox", n)
		}
		return nil
	})
	msgs, dups, err := delivered(context.Background(), g.k.Addrs, "accounts")
	if err != nil {
		g.t.Fatal(err)
	}
	return msgs, dups
}

// TestRelayNextRoundDoesNotWaitForItsMark: while the DELETE of a round's
// row waits (here on a gate; in production a durable commit, 1–10 ms), the
// next rows of the same key are delivered, and the first is not published
// again; once the gate opens it is deleted. The round after next does not
// wait for the mark before its own either: when each round waited for the
// one before (one mark in flight per shard), a busy shard's rounds were
// paced by the marker's commits (past saturation 36–72 ms each, nearly all
// of it waiting, and commit → read p50 was 27–35 ms).
func TestRelayNextRoundDoesNotWaitForItsMark(t *testing.T) {
	t.Parallel()
	g := startGated(t)
	g.publish(1)
	g.waitMarkHeld()
	g.publish(2)
	checkOrder(t, g.publish(3), nil)
	g.src.open()
	if _, dups := g.waitDrained(20 * time.Second); dups != 0 {
		t.Fatalf("%d duplicates: a row whose mark was under way was published again", dups)
	}
}

// TestRelayWaitsForMarksBeyondABatch: the rows a shard has waiting for the
// marker stay within a batch (Config.BatchSize), which bounds the relay's
// memory however far marking falls behind. With marks held and a batch of
// 3, at most 6 of 12 rows go out: 3 waiting for their marks, and a round of
// at most 3 that published before it found no room (a handed round waits
// for room; a read of a full batch of rows being marked waits for the
// marks); the rest once the marks are done.
func TestRelayWaitsForMarksBeyondABatch(t *testing.T) {
	t.Parallel()
	g := startGated(t, func(c *Config) { c.BatchSize = 3 })
	g.publish(1)
	g.waitMarkHeld()
	for n := 2; n <= 12; n++ {
		if err := publishTx(context.Background(), g.d.DB, true, msg("accounts", "k", n)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	msgs, _, err := delivered(context.Background(), g.k.Addrs, "accounts")
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) > 6 {
		t.Fatalf("%d messages delivered while the marks waited, want at most 6", len(msgs))
	}
	g.src.open()
	msgs, dups := g.waitDrained(20 * time.Second)
	checkOrder(t, msgs, nil)
	if len(msgs) != 12 || dups != 0 {
		t.Fatalf("%d messages and %d duplicates once the marks were done, want 12 and none", len(msgs), dups)
	}
}

// TestRelayRepublishesARowWhoseMarkFailed: a round does not wait for its
// mark, so the worker's floor may pass a row before its mark fails. The
// shard is then read from its start, and the row, still in the outbox, is
// published again and deleted, long before the worker's periodic sweep from
// the start would find it.
func TestRelayRepublishesARowWhoseMarkFailed(t *testing.T) {
	t.Parallel()
	g := startGated(t)
	g.src.failOnce.Store(true)
	g.publish(1)
	first := countRows(t, g.d.DB, "SELECT MAX(seq) FROM txmsg_outbox")
	// The horizon passes the first row, and a later round's read moves the
	// worker's floor past it, while its mark waits.
	testenv.Eventually(t, 20*time.Second, func() error {
		if s := g.settled[g.src.Name()].Load(); s <= int64(first) {
			return fmt.Errorf("the horizon is at seq %d, not past %d", s, first)
		}
		return nil
	})
	g.publish(2)
	g.src.open() // the first row's mark fails; the second's succeeds
	if msgs, dups := g.waitDrained(sweepInterval / 2); len(msgs) != 2 || dups != 1 {
		t.Fatalf("%d messages and %d duplicates: want two, the first published twice", len(msgs), dups)
	}
}

// TestRelayReadsPastAMarkThatCommitsDuringTheRead: a poll reads a row whose
// mark is under way; the mark commits (and the worker hears of it) before
// the poll returns. The row is still in the poll's snapshot and must not be
// published again: the poll is filtered with the rows being marked when it
// began.
func TestRelayReadsPastAMarkThatCommitsDuringTheRead(t *testing.T) {
	t.Parallel()
	g := startGated(t)
	g.publish(1)
	g.waitMarkHeld()
	commitMark := func() {
		g.src.open()
		select {
		case <-g.src.marked:
		case <-time.After(20 * time.Second):
			t.Error("the first row's mark did not end within 20s")
		}
		// Let the worker hear that the mark is done before the read returns.
		time.Sleep(100 * time.Millisecond)
	}
	g.src.afterRead.Store(&commitMark)
	g.publish(2)
	if _, dups := g.waitDrained(20 * time.Second); dups != 0 {
		t.Fatalf("%d duplicates: the row whose mark committed during the read was published again", dups)
	}
}
