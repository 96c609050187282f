package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	// afterRead, when set, runs once after a poll read its rows and before
	// it returns them.
	afterRead atomic.Pointer[func()]
}

func (s *gatedOutbox) Pending(ctx context.Context, q Querier, shard int, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.Pending(ctx, q, shard, limit)
	s.hook()
	return rows, err
}

func (s *gatedOutbox) PendingFrom(ctx context.Context, q Querier, shard int, from int64, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.PendingFrom(ctx, q, shard, from, limit)
	s.hook()
	return rows, err
}

func (s *gatedOutbox) hook() {
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

// TestRelayNextRoundDoesNotWaitForItsMark: while the DELETE of a round's
// row waits (here on a gate; in production a durable commit, 1–10 ms), the
// next row of the same key is delivered, and the first is not published
// again; once the gate opens it is deleted.
func TestRelayNextRoundDoesNotWaitForItsMark(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	cfg := testConfig(k.Addrs)
	// The mark may wait until the lease runs out: far longer than the test.
	cfg.LeaseTTL = time.Minute
	src := newGatedOutbox(t)
	src.hold.Store(true)
	startEngine(t, d.DB, cfg, WithSources(src))
	ctx := context.Background()
	if err := publishTx(ctx, d.DB, true, msg("accounts", "k", 1)); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, k.Addrs, "accounts", 1, 20*time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		if src.waiting.Load() == 0 {
			return errors.New("the first row's mark has not started")
		}
		return nil
	})
	if err := publishTx(ctx, d.DB, true, msg("accounts", "k", 2)); err != nil {
		t.Fatal(err)
	}
	msgs := waitDelivered(t, k.Addrs, "accounts", 2, 20*time.Second)
	checkOrder(t, msgs, nil)
	src.open()
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox"); n != 0 {
			return fmt.Errorf("%d rows still in the outbox", n)
		}
		return nil
	})
	if _, dups, err := delivered(ctx, k.Addrs, "accounts"); err != nil || dups != 0 {
		t.Fatalf("%d duplicates (%v): a row whose mark was under way was published again", dups, err)
	}
}

// TestRelayRepublishesARowWhoseMarkFailed: a round does not wait for its
// mark, so the worker's floor may pass a row before its mark fails. The
// shard is then read from its start, and the row, still in the outbox, is
// published again and deleted, long before the worker's periodic sweep from
// the start would find it.
func TestRelayRepublishesARowWhoseMarkFailed(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	cfg := testConfig(k.Addrs)
	cfg.LeaseTTL = time.Minute
	src := newGatedOutbox(t)
	src.hold.Store(true)
	src.failOnce.Store(true)
	r := startEngine(t, d.DB, cfg, WithSources(src))
	ctx := context.Background()
	publish := func(n int) {
		t.Helper()
		if err := publishTx(ctx, d.DB, true, msg("accounts", "k", n)); err != nil {
			t.Fatal(err)
		}
		waitDelivered(t, k.Addrs, "accounts", n, 20*time.Second)
	}
	publish(1)
	first := countRows(t, d.DB, "SELECT MAX(seq) FROM txmsg_outbox")
	// The horizon passes the first row, and a later round's read moves the
	// worker's floor past it, while its mark waits.
	testenv.Eventually(t, 20*time.Second, func() error {
		if s := r.settled[src.Name()].Load(); s <= int64(first) {
			return fmt.Errorf("the horizon is at seq %d, not past %d", s, first)
		}
		return nil
	})
	publish(2)
	src.open() // the first row's mark fails; the second's succeeds
	testenv.Eventually(t, sweepInterval/2, func() error {
		if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox"); n != 0 {
			return fmt.Errorf("%d rows still in the outbox", n)
		}
		return nil
	})
	msgs, dups, err := delivered(ctx, k.Addrs, "accounts")
	if err != nil || len(msgs) != 2 || dups != 1 {
		t.Fatalf("%d messages and %d duplicates (%v): want two, the first published twice", len(msgs), dups, err)
	}
}

// TestRelayReadsPastAMarkThatCommitsDuringTheRead: a poll reads a row whose
// mark is under way; the mark commits (and the worker hears of it) before
// the poll returns. The row is still in the poll's snapshot and must not be
// published again: the poll is filtered with the rows being marked when it
// began.
func TestRelayReadsPastAMarkThatCommitsDuringTheRead(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	cfg := testConfig(k.Addrs)
	cfg.LeaseTTL = time.Minute
	src := newGatedOutbox(t)
	src.hold.Store(true)
	startEngine(t, d.DB, cfg, WithSources(src))
	ctx := context.Background()
	if err := publishTx(ctx, d.DB, true, msg("accounts", "k", 1)); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, k.Addrs, "accounts", 1, 20*time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		if src.waiting.Load() == 0 {
			return errors.New("the first row's mark has not started")
		}
		return nil
	})
	commitMark := func() {
		src.open()
		select {
		case <-src.marked:
		case <-time.After(20 * time.Second):
			t.Error("the first row's mark did not end within 20s")
		}
		// Let the worker hear that the mark is done before the read returns.
		time.Sleep(100 * time.Millisecond)
	}
	src.afterRead.Store(&commitMark)
	if err := publishTx(ctx, d.DB, true, msg("accounts", "k", 2)); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, k.Addrs, "accounts", 2, 20*time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox"); n != 0 {
			return fmt.Errorf("%d rows still in the outbox", n)
		}
		return nil
	})
	if _, dups, err := delivered(ctx, k.Addrs, "accounts"); err != nil || dups != 0 {
		t.Fatalf("%d duplicates (%v): the row whose mark committed during the read was published again", dups, err)
	}
}
