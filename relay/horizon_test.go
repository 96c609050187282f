package relay

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

func TestRelayHorizonSettlesOnlySeqsOfEndedTransactions(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var h horizon
	steps := []struct {
		head       int64
		at, oldest time.Time
		want       int64
	}{
		// Nothing runs, but the list of transactions may be a little
		// stale: a reading is final only once it is older than that.
		{10, at(0), time.Time{}, 0},
		{12, at(500), time.Time{}, 0},
		{14, at(1100), time.Time{}, 11},
		// A transaction that started before the reading of 12 may still
		// commit a seq up to 12.
		{20, at(1600), at(400), 11},
		{25, at(2700), at(400), 11},
		// It ended; the oldest running one started after the reading of
		// 20, before that of 25.
		{30, at(3000), at(2000), 21},
		// An empty table tells nothing new, and the horizon never goes down.
		{0, at(5000), at(4500), 31},
		{5, at(7000), time.Time{}, 31},
	}
	for i, s := range steps {
		if got := h.observe(s.head, s.at, s.oldest); got != s.want {
			t.Fatalf("step %d: observe(%d) = %d, want %d", i, s.head, got, s.want)
		}
	}
}

func TestRelayHorizonKeepsBoundedSamples(t *testing.T) {
	t.Parallel()
	var h horizon
	t0 := time.Now()
	for i := range 3 * horizonSamples {
		h.observe(int64(i+1), t0.Add(time.Duration(i)*time.Millisecond), t0.Add(-time.Hour))
	}
	if len(h.samples) > horizonSamples {
		t.Fatalf("%d samples kept, want at most %d", len(h.samples), horizonSamples)
	}
	if h.settled != 0 {
		t.Fatalf("settled %d while a transaction older than every reading runs, want 0", h.settled)
	}
}

// seekRecorder records the highest seq polls started from. Its Head says
// no transaction runs: other tests' transactions on the same server would
// hold the horizon back (safely, but for longer than a test waits).
type seekRecorder struct {
	*OutboxSource
	maxFrom atomic.Int64
}

func (s *seekRecorder) Head(ctx context.Context, db *sql.DB, after int64) (int64, time.Time, time.Time, error) {
	head, at, _, err := s.OutboxSource.Head(ctx, db, after)
	return head, at, time.Time{}, err
}

func (s *seekRecorder) PendingFrom(ctx context.Context, q Querier, shard int, from int64, limit Limit) ([]Row, error) {
	for {
		m := s.maxFrom.Load()
		if from <= m || s.maxFrom.CompareAndSwap(m, from) {
			break
		}
	}
	return s.OutboxSource.PendingFrom(ctx, q, shard, from, limit)
}

// Once rows are delivered, a shard's polls start above them: they do not
// step again over deleted rows that InnoDB has not purged yet.
func TestRelayPollsStartAboveDeliveredRows(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	ctx := context.Background()
	for i := range 40 {
		if err := publishTx(ctx, d.DB, true, msg("floor", fmt.Sprintf("k%d", i%4), i)); err != nil {
			t.Fatal(err)
		}
	}
	last := int64(countRows(t, d.DB, "SELECT MAX(seq) FROM txmsg_outbox"))
	src := NewOutboxSource(false)
	rec := &seekRecorder{OutboxSource: src}
	startEngine(t, d.DB, testConfig(k.Addrs), WithSources(rec))
	waitDelivered(t, k.Addrs, "floor", 40, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error {
		if m := rec.maxFrom.Load(); m <= last {
			return fmt.Errorf("polls start at most from seq %d, want above the last delivered %d", m, last)
		}
		return nil
	})
}

// Head reports the highest seq and a running transaction's start.
func TestRelayOutboxHeadSeesRunningTransactions(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	src := NewOutboxSource(false)
	if head, _, _, err := src.Head(ctx, d.DB, 0); err != nil || head != 0 {
		t.Fatalf("empty outbox: Head = %d, %v; want 0, nil", head, err)
	}
	for i := range 3 {
		if err := publishTx(ctx, d.DB, true, msg("head", "k", i)); err != nil {
			t.Fatal(err)
		}
	}
	last := int64(countRows(t, d.DB, "SELECT MAX(seq) FROM txmsg_outbox"))
	tx, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := publishTx(ctx, d.DB, false, msg("head", "k", 9)); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO txmsg_outbox (id, shard, topic, value, created_at) VALUES ('open', 0, 'head', '', UTC_TIMESTAMP(6))"); err != nil {
		t.Fatal(err)
	}
	var started time.Time
	if err := tx.QueryRowContext(ctx, "SELECT UTC_TIMESTAMP(6)").Scan(&started); err != nil {
		t.Fatal(err)
	}
	// InnoDB lists running transactions from a cache it refreshes only when
	// nobody read it for 100 ms, which other tests' relays may prevent: a
	// reading may be stale (oldest before every reading), but never later
	// than the running transaction's start.
	for range 5 {
		head, at, oldest, err := src.Head(ctx, d.DB, 0)
		switch {
		case err != nil:
			t.Fatal(err)
		case head != last:
			t.Fatalf("head %d, want %d: the open transaction's row is not committed", head, last)
		case oldest.IsZero() || oldest.After(started):
			t.Fatalf("oldest transaction started %v, want at or before %v", oldest, started)
		case at.Before(started):
			t.Fatalf("clock %v before the transaction's %v", at, started)
		}
		time.Sleep(150 * time.Millisecond)
	}
	// A seq known taken above everything held is the head.
	if head, _, _, err := src.Head(ctx, d.DB, last+100); err != nil || head != last+100 {
		t.Fatalf("Head(after %d) = %d, %v; want %d", last+100, head, err, last+100)
	}
}

// Head reads its clock and the oldest transaction's start in one time zone
// whatever the session's: information_schema.innodb_trx shows the server's
// system zone, a session (its DSN's time_zone) may run in another.
func TestRelayOutboxHeadIgnoresTheSessionTimeZone(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	src := NewOutboxSource(false)
	tx, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "INSERT INTO txmsg_outbox (id, shard, topic, value, created_at) VALUES ('open', 0, 'tz', '', UTC_TIMESTAMP(6))"); err != nil {
		t.Fatal(err)
	}
	for _, zone := range []string{"-05:00", "+05:00"} {
		db := d.Pool(t, "time_zone=%27"+url.QueryEscape(zone)+"%27")
		for range 3 {
			_, at, oldest, err := src.Head(ctx, db, 0)
			if err != nil {
				t.Fatal(err)
			}
			// The list may be stale (oldest at the epoch), never later than
			// the clock, nor hours before it (other tests' transactions count too).
			if oldest.After(at) || (oldest.Unix() != 0 && at.Sub(oldest) > time.Hour) {
				t.Fatalf("session time zone %s: oldest transaction started %v, clock %v", zone, oldest, at)
			}
			time.Sleep(150 * time.Millisecond)
		}
	}
}

// A late commit keeps its key's order when the relay's sessions run in a
// time zone west of the server's: the horizon does not settle the seq of a
// transaction still open, so the row is read before the later one of its
// key, not found by a sweep half a minute later.
func TestRelayLateCommitKeepsItsOrderWhateverTheSessionTimeZone(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	ctx := context.Background()
	startEngine(t, d.Pool(t, "time_zone=%27"+url.QueryEscape("-05:00")+"%27"), oneShardConfig(k.Addrs))
	p, err := outbox.NewPublisher(outbox.WithShards(1))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	a := msg("tz", "k", 1)
	a.ID = "A"
	if err := p.Publish(ctx, tx, a); err != nil {
		t.Fatal(err)
	}
	b := msg("tz", "b", 1)
	b.ID = "B"
	publishOneShard(t, d.DB, b)
	waitDelivered(t, k.Addrs, "tz", 1, 10*time.Second)
	// Long enough for the horizon to pass A's seq if it took the open
	// transaction for a later one, and for the probe to stop asking.
	time.Sleep(3 * time.Second)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	c := msg("tz", "k", 2)
	c.ID = "C"
	publishOneShard(t, d.DB, c)
	got := waitDelivered(t, k.Addrs, "tz", 3, 10*time.Second)
	var order []string
	for _, m := range got {
		if string(m.Key) == "k" {
			order = append(order, string(m.Value))
		}
	}
	if !slices.Equal(order, []string{"k:1", "k:2"}) {
		t.Fatalf("key k delivered as %v, want [k:1 k:2]", order)
	}
}

// Transactions that cannot hold a seq do not hold the horizon: one between
// statements that has changed no row (a forgotten session), and a SELECT in
// autocommit (a long report). Before, every read of every shard stepped over
// all the rows delivered since the oldest of them began.
func TestRelayHorizonPassesReadersThatCannotHoldASeq(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	if _, err := d.DB.Exec("INSERT INTO txmsg_outbox (id, shard, topic, value, created_at) VALUES ('one', 0, 'h', '', UTC_TIMESTAMP(6))"); err != nil {
		t.Fatal(err)
	}
	var began time.Time
	if err := d.DB.QueryRow("SELECT UTC_TIMESTAMP(6)").Scan(&began); err != nil {
		t.Fatal(err)
	}
	testenv.HoldReadView(t, d.DB)
	report, err := d.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = report.Close() })
	var id int64
	if err := report.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	reported := make(chan error, 1)
	go func() {
		var n int
		reported <- report.QueryRowContext(ctx, "SELECT SLEEP(30) FROM txmsg_outbox").Scan(&n)
	}()
	t.Cleanup(func() {
		_, _ = d.DB.Exec("KILL QUERY ?", id)
		if err := <-reported; err != nil {
			t.Logf("the report, killed: %v", err)
		}
	})
	// trx_started has whole seconds: the oldest passes began once the
	// clock is in the next one.
	src := NewOutboxSource(false)
	// Other tests' writers, started before began, may hold the oldest
	// back for a while: the deadline is long, the report longer.
	deadline := time.Now().Add(25 * time.Second)
	for {
		_, _, oldest, err := src.Head(ctx, d.DB, 0)
		if err != nil {
			t.Fatal(err)
		}
		if oldest.After(began) {
			break
		}
		select {
		case err := <-reported:
			t.Fatalf("the report ended (%v) while the oldest transaction still started at %v, before %v", err, oldest, began)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the oldest transaction started at %v, before the readers began (%v)", oldest, began)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
