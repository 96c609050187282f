package relay

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/txmsg/txmsg/internal/testenv"
)

// markSource is a Source whose Delivered records each call (rows and the
// transaction), blocks the first call until release closes, and fails rows
// of shard failShard.
type markSource struct {
	OutboxSource
	release   chan struct{}
	failShard int
	mu        sync.Mutex
	calls     [][]int64
	first     chan struct{}
	once      sync.Once
}

func (s *markSource) Delivered(ctx context.Context, _ Execer, rows []Row) error {
	s.once.Do(func() {
		close(s.first)
		select {
		case <-s.release:
		case <-ctx.Done():
		}
	})
	if err := ctx.Err(); err != nil {
		// As a statement run on ctx would.
		return err
	}
	var seqs []int64
	for _, r := range rows {
		if r.Shard == s.failShard {
			return errors.New("refused")
		}
		seqs = append(seqs, r.Seq)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, seqs)
	return nil
}

// mark submits rows and waits until they are marked or ctx ends, as a round
// did before rounds stopped waiting for their marks.
func (m *marker) mark(ctx context.Context, src Source, rows []Row) error {
	done, err := m.submit(ctx, src, rows)
	if err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func startMarker(t *testing.T, db *sql.DB) *marker {
	t.Helper()
	m := newMarker(db)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		m.run(context.Background(), stop)
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return m
}

// Rounds that finish while a marking transaction runs are marked together
// in the next one: one commit for many shards.
func TestMarkerGroupsRoundsInOneTransaction(t *testing.T) {
	d := testenv.NewDB(t)
	src := &markSource{release: make(chan struct{}), failShard: -1, first: make(chan struct{})}
	t.Cleanup(func() {
		select {
		case <-src.release:
		default:
			close(src.release)
		}
	})
	m := startMarker(t, d.DB)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, 3)
	go func() { errs <- m.mark(ctx, src, []Row{{Shard: 0, Seq: 1}}) }()
	<-src.first
	// The first transaction is under way: these two queue behind it.
	go func() { errs <- m.mark(ctx, src, []Row{{Shard: 1, Seq: 2}}) }()
	go func() { errs <- m.mark(ctx, src, []Row{{Shard: 2, Seq: 3}}) }()
	waitFor(t, func() bool { return len(m.reqs) == 2 })
	close(src.release)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.calls) != 2 {
		t.Fatalf("Delivered calls = %v; want 2: the first round alone, then the two queued behind it together", src.calls)
	}
	second := slices.Clone(src.calls[1])
	slices.Sort(second)
	if !slices.Equal(second, []int64{2, 3}) {
		t.Fatalf("second call marked %v; want [2 3]", second)
	}
}

// Under a trickle the marker spaces its transactions: rows that come within
// the spacing of the last one's start wait for more, until they are
// markEager rows or the marker stops.
func TestMarkerSpacesTransactionsOfFewRows(t *testing.T) {
	d := testenv.NewDB(t)
	src := &markSource{release: make(chan struct{}), failShard: -1, first: make(chan struct{})}
	close(src.release)
	m := newMarker(d.DB)
	m.spacing = time.Hour // only markEager rows or the stop end a wait
	stop, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		m.run(context.Background(), stop)
	}()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-ended
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.mark(ctx, src, []Row{{Shard: 0, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	submit := func(rows []Row) <-chan error {
		t.Helper()
		done, err := m.submit(ctx, src, rows)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return len(m.reqs) == 0 })
		return done
	}
	outcome := func(done <-chan error) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("no outcome")
		}
	}
	few := []<-chan error{submit([]Row{{Shard: 1, Seq: 2}}), submit([]Row{{Shard: 2, Seq: 3}})}
	for _, done := range few {
		select {
		case err := <-done:
			t.Fatalf("a round of one row was marked (%v) right after another mark; want it to wait for more", err)
		default:
		}
	}
	var many []Row
	for i := range markEager - 2 {
		many = append(many, Row{Shard: 3, Seq: int64(10 + i)})
	}
	outcome(submit(many))
	for _, done := range few {
		outcome(done)
	}
	last := submit([]Row{{Shard: 4, Seq: 5}})
	close(stop)
	outcome(last)

	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.calls) != 3 || len(src.calls[1]) != markEager || !slices.Equal(src.calls[2], []int64{5}) {
		var sizes []int
		for _, c := range src.calls {
			sizes = append(sizes, len(c))
		}
		t.Fatalf("Delivered calls of %v rows; want 3: the first row alone, the next %d rows together, the last at the stop",
			sizes, markEager)
	}
}

// One round the source refuses does not fail the rounds marked with it.
func TestMarkerFailureFailsOnlyItsRound(t *testing.T) {
	d := testenv.NewDB(t)
	src := &markSource{release: make(chan struct{}), failShard: 7, first: make(chan struct{})}
	m := startMarker(t, d.DB)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, 1)
	go func() { errs <- m.mark(ctx, src, []Row{{Shard: 0, Seq: 1}}) }()
	<-src.first
	bad, good := make(chan error, 1), make(chan error, 1)
	go func() { bad <- m.mark(ctx, src, []Row{{Shard: 7, Seq: 2}}) }()
	go func() { good <- m.mark(ctx, src, []Row{{Shard: 3, Seq: 3}}) }()
	waitFor(t, func() bool { return len(m.reqs) == 2 })
	close(src.release)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if err := <-bad; err == nil {
		t.Fatal("the refused round was reported marked")
	}
	if err := <-good; err != nil {
		t.Fatalf("a round marked beside a refused one failed: %v", err)
	}
}

// A round whose wait ends gives up without blocking the marker.
func TestMarkerRoundGivesUpAtItsDeadline(t *testing.T) {
	d := testenv.NewDB(t)
	src := &markSource{release: make(chan struct{}), failShard: -1, first: make(chan struct{})}
	t.Cleanup(func() { close(src.release) })
	m := startMarker(t, d.DB)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := m.mark(ctx, src, []Row{{Shard: 0, Seq: 1}}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("mark = %v; want the deadline", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// pingSource is a Source whose Delivered runs a statement in the marking
// transaction.
type pingSource struct{ OutboxSource }

func (*pingSource) Delivered(ctx context.Context, e Execer, _ []Row) error {
	_, err := e.ExecContext(ctx, "DO 1")
	return err
}

// A marking connection cut while idle (wait_timeout, a proxy) costs no
// round: the marker tries once more on a fresh connection.
func TestMarkerSurvivesACutConnection(t *testing.T) {
	d := testenv.NewDB(t)
	m := startMarker(t, d.DB)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src := &pingSource{}
	if err := m.mark(ctx, src, []Row{{Shard: 0, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	var db string
	if err := d.DB.QueryRow("SELECT DATABASE()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	rows, err := d.DB.Query("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()", db)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		_, _ = d.DB.Exec("KILL ?", id)
	}
	if len(ids) == 0 {
		t.Fatal("the marker holds no connection")
	}
	if err := m.mark(ctx, src, []Row{{Shard: 0, Seq: 2}}); err != nil {
		t.Fatalf("mark after the connection was cut: %v", err)
	}
}

// A lone outbox source's rows are marked with one statement outside a
// transaction; the marker's session commits it by itself even when the
// pool's DSN turns autocommit off, and with retention the archive and the
// delete still go in one transaction.
func TestMarkerCommitsWithAutocommitOffInTheDSN(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	off, err := sql.Open("mysql", d.DSN+"&autocommit=0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { off.Close() })
	m := startMarker(t, off)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, keep := range []bool{false, true} {
		publishOneShard(t, d.DB, msg("ac", "k", 1), msg("ac", "k", 2))
		var rows []Row
		q, err := d.DB.QueryContext(ctx, "SELECT shard, seq FROM txmsg_outbox")
		if err != nil {
			t.Fatal(err)
		}
		for q.Next() {
			var r Row
			if err := q.Scan(&r.Shard, &r.Seq); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
		}
		if err := q.Close(); err != nil || len(rows) != 2 {
			t.Fatalf("keep=%t: %d rows pending (%v), want 2", keep, len(rows), err)
		}
		if err := m.mark(ctx, NewOutboxSource(keep), rows); err != nil {
			t.Fatalf("keep=%t: %v", keep, err)
		}
		if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox"); n != 0 {
			t.Errorf("keep=%t: %d rows still pending for other connections: the marking did not commit", keep, n)
		}
	}
	if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox_delivered"); n != 2 {
		t.Errorf("%d rows archived, want the 2 marked with retention", n)
	}
}

// A worker's rows waiting for the marker stay within a limit: room lets a
// round's rows in beside others while they fit, or beside none whatever
// their number, and otherwise waits for a mark's outcome or the context.
func TestMarkingRoomWaitsForMarksBeyondTheLimit(t *testing.T) {
	var k marking
	ctx := context.Background()
	if err := k.room(ctx, 5, 3); err != nil {
		t.Fatalf("room for 5 beside none: %v", err)
	}
	first, second := []Row{{Seq: 1}, {Seq: 2}}, []Row{{Seq: 3}}
	k.add(first)
	k.add(second)
	if err := k.room(ctx, 1, 4); err != nil {
		t.Fatalf("room for 1 beside 3 of 4: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := k.room(short, 2, 4); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("room for 2 beside 3 of 4 = %v, want it to wait until the context ends", err)
	}
	got := make(chan error, 1)
	go func() { got <- k.room(ctx, 2, 4) }()
	k.done(first, nil)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("room still waits after a mark freed 2 of 3 rows")
	}
	k.done(second, nil)
}
