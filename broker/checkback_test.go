package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/backoff"
	"github.com/txmsg/txmsg/internal/testenv"
)

func prepareOne(t *testing.T, store *Store, req halfmsg.PrepareRequest) string {
	t.Helper()
	if req.ProducerGroup == "" {
		req.ProducerGroup = "g"
	}
	if req.Message.Topic == "" {
		req.Message.Topic = "t"
	}
	if req.Message.Value == nil {
		req.Message.Value = []byte("v")
	}
	id, err := store.Prepare(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestBrokerCheckbackLedgerResolvesCrashedProducer(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	ledger, err := checkback.LedgerChecker(env.db.DB)
	if err != nil {
		t.Fatal(err)
	}
	url := producerServer(t, env.store, "g", ledger)
	if err := env.store.SetGroup(ctx, "g", url); err != nil {
		t.Fatal(err)
	}
	scanner := testScanner(t, env.store, ScannerConfig{CallTimeout: 10 * time.Second, Lease: 25 * time.Second})

	// The producer committed its local transaction, then crashed before
	// calling commit.
	committed := prepareOne(t, env.store, halfmsg.PrepareRequest{CheckTimeout: 20 * time.Millisecond})
	if err := recordInTx(ctx, env.db.DB, ledger, committed, true); err != nil {
		t.Fatal(err)
	}
	// The producer crashed before its local transaction.
	lost := prepareOne(t, env.store, halfmsg.PrepareRequest{CheckTimeout: 20 * time.Millisecond})

	info := waitState(t, env.store, scanner, committed, halfmsg.StateCommitted, 10*time.Second)
	if info.LastCheckResult != "commit" || info.CheckCount != 1 {
		t.Fatalf("committed by check-back: %+v", info)
	}
	waitState(t, env.store, scanner, lost, halfmsg.StateRolledBack, 10*time.Second)
	// The lost transaction, arriving late, must not commit.
	if err := recordInTx(ctx, env.db.DB, ledger, lost, true); !errors.Is(err, checkback.ErrAlreadyDecided) || !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("late local transaction after a rollback check: %v, want ErrAlreadyDecided", err)
	}

	// A check arriving while the local transaction is open waits for it.
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("open transaction commits=%v", commit), func(t *testing.T) {
			id := prepareOne(t, env.store, halfmsg.PrepareRequest{CheckTimeout: time.Millisecond})
			tx, err := env.db.DB.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tx.Rollback() })
			if err := ledger.Record(ctx, tx, id); err != nil {
				t.Fatal(err)
			}
			// One scan: its check blocks in the producer until the local
			// transaction ends.
			done := make(chan error, 1)
			go func() { done <- scanUntilChecked(ctx, scanner) }()
			// Wait until the check's INSERT IGNORE is blocked on our row lock.
			testenv.Eventually(t, 10*time.Second, func() error {
				var n int
				if err := env.db.DB.QueryRowContext(ctx,
					`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = ? AND INFO LIKE 'INSERT IGNORE%'`, env.db.Name).Scan(&n); err != nil {
					return err
				}
				if n == 0 {
					return errors.New("no check waiting for the local transaction yet")
				}
				return nil
			})
			if commit {
				err = tx.Commit()
			} else {
				err = tx.Rollback()
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			want := halfmsg.StateRolledBack
			if commit {
				want = halfmsg.StateCommitted
			}
			info := waitState(t, env.store, scanner, id, want, 10*time.Second)
			if info.CheckCount != 1 {
				t.Fatalf("resolved after %d checks, want 1", info.CheckCount)
			}
		})
	}
}

// scanUntilChecked scans until one scan has checked a message.
func scanUntilChecked(ctx context.Context, s *Scanner) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		n, err := s.Scan(ctx)
		if err != nil || n > 0 {
			return err
		}
		select {
		case <-tick.C:
		case <-deadline:
			return errors.New("no message became due within 10s")
		}
	}
}

func recordInTx(ctx context.Context, db *sql.DB, l *checkback.Ledger, id string, commit bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := l.Record(ctx, tx, id); err != nil {
		return errors.Join(err, tx.Rollback())
	}
	if !commit {
		return tx.Rollback()
	}
	return tx.Commit()
}

// recMetrics records Resolved calls.
type recMetrics struct {
	mu       sync.Mutex
	resolved map[string]int
}

func (m *recMetrics) Resolved(to halfmsg.State, by string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.resolved[to.String()+"/"+by]++
}

func (m *recMetrics) get(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.resolved[key]
}

func TestBrokerCheckbackUnknownBacksOffDiscardsAndResolves(t *testing.T) {
	t.Parallel()
	metrics := &recMetrics{resolved: map[string]int{}}
	env := newAPIEnv(t, WithStoreHooks(metrics))
	ctx := context.Background()
	probe := newProbe()
	var (
		callsMu sync.Mutex
		calls   []time.Time // when the producer was asked
	)
	url := producerServer(t, env.store, "g", checkback.CheckerFunc(func(ctx context.Context, req checkback.Request) (checkback.Answer, error) {
		callsMu.Lock()
		calls = append(calls, time.Now())
		callsMu.Unlock()
		probe.enter(req.ID)
		defer probe.leave(req.ID)
		return checkback.AnswerUnknown, nil
	}))
	const (
		interval    = 80 * time.Millisecond
		maxInterval = 200 * time.Millisecond
		maxChecks   = 5
	)
	scanner := testScanner(t, env.store, ScannerConfig{MaxInterval: maxInterval})
	id := prepareOne(t, env.store, halfmsg.PrepareRequest{CheckbackURL: url, CheckTimeout: interval, MaxChecks: maxChecks})

	info := waitState(t, env.store, scanner, id, halfmsg.StateDiscarded, 15*time.Second)
	if info.CheckCount != maxChecks || info.LastCheckResult != "unknown" || info.Reason == "" {
		t.Fatalf("discarded: %+v", info)
	}
	checks, err := env.store.Checks(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) != maxChecks {
		t.Fatalf("%d checks recorded, want %d", len(checks), maxChecks)
	}
	// Each gap between two calls is at least the jittered backoff's floor:
	// half its ceiling. The calls' own times are compared, not the history's
	// checked_at: a row is stamped when its record commits, which a loaded
	// machine may delay after the next check was scheduled.
	callsMu.Lock()
	asked := append([]time.Time(nil), calls...)
	callsMu.Unlock()
	if len(asked) != maxChecks {
		t.Fatalf("producer asked %d times, want %d", len(asked), maxChecks)
	}
	p := backoff.Policy{Initial: interval, Max: maxInterval, Factor: 2}
	for n := 1; n < len(checks); n++ {
		gap := asked[n].Sub(asked[n-1])
		if floor := p.Ceiling(n)/2 - 5*time.Millisecond; gap < floor {
			t.Fatalf("check %d came %v after check %d, before the backoff floor %v", n+1, gap, n, floor)
		}
		if checks[n].Result != "unknown" || checks[n].No != n+1 {
			t.Fatalf("check %d: %+v", n+1, checks[n])
		}
	}
	// More scans ask nothing more.
	for range 3 {
		if _, err := scanner.Scan(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if overlaps, _, calls := probe.snapshot(); calls[id] != maxChecks || overlaps != 0 {
		t.Fatalf("producer asked %d times (%d overlapping), want %d", calls[id], overlaps, maxChecks)
	}
	if metrics.get("discarded/checkback") != 1 {
		t.Fatalf("discard metric %v", metrics.resolved)
	}
	// Producers cannot commit a discarded message; an operator can.
	if _, err := env.client.Commit(ctx, id); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("producer commit of a discarded message: %v, want ErrConflict", err)
	}
	discarded, _, err := env.client.List(ctx, halfmsg.Filter{State: halfmsg.StateDiscarded})
	if err != nil || len(discarded) != 1 || discarded[0].ID != id {
		t.Fatalf("list discarded: %v, %v", discarded, err)
	}
	for range 2 {
		st, err := env.client.Resolve(ctx, id, true, "checked by hand: order 17 exists")
		if err != nil || st != halfmsg.StateCommitted {
			t.Fatalf("resolve commit: %v, %v", st, err)
		}
	}
	info, _ = env.store.Get(ctx, id)
	if info.State != halfmsg.StateCommitted || info.Reason != "checked by hand: order 17 exists" {
		t.Fatalf("after resolve: %+v", info)
	}
	if metrics.get("committed/operator") != 1 {
		t.Fatalf("resolve metric %v", metrics.resolved)
	}
}

// slowHandler answers only after the caller gave up (or 5s). It reads the
// body first: the server notices a closed connection only after that.
func slowHandler(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-r.Context().Done():
	case <-time.After(5 * time.Second):
	}
}

func TestBrokerCheckbackBadProducersCountAsChecks(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	probe := newProbe()
	counted := func(h http.HandlerFunc) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			probe.enter(r.URL.Path)
			defer probe.leave(r.URL.Path)
			h(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	cases := map[string]string{
		"down":     downURL,
		"slow":     counted(slowHandler) + "/slow",
		"garbage":  counted(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("<html>hello")) }) + "/garbage",
		"5xx":      counted(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusServiceUnavailable) }) + "/5xx",
		"bad name": counted(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"state":"maybe"}`)) }) + "/badname",
		"no state": counted(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{}`)) }) + "/nostate",
		"no url":   "",
	}
	const maxChecks = 3
	ids := map[string]string{}
	for name, url := range cases {
		ids[name] = prepareOne(t, env.store, halfmsg.PrepareRequest{ProducerGroup: "unregistered", CheckbackURL: url,
			CheckTimeout: 30 * time.Millisecond, MaxChecks: maxChecks})
	}
	scanner := testScanner(t, env.store, ScannerConfig{Concurrency: 4, CallTimeout: 150 * time.Millisecond, MaxInterval: 100 * time.Millisecond})
	for name, id := range ids {
		info := waitState(t, env.store, scanner, id, halfmsg.StateDiscarded, 20*time.Second)
		if info.CheckCount != maxChecks || info.LastCheckResult != "error" || info.LastCheckError == "" {
			t.Fatalf("%s: %+v", name, info)
		}
		checks, err := env.store.Checks(ctx, id)
		if err != nil || len(checks) != maxChecks {
			t.Fatalf("%s: %d checks recorded (%v), want %d", name, len(checks), err, maxChecks)
		}
	}
	// The slow producer notices a canceled call late, so its calls may look
	// overlapping from its side; count only. A call that timed out before
	// the producer's server read it (connecting can take longer than the
	// call timeout on a loaded machine) still counts as a check: a producer
	// is asked at most maxChecks times, and at least once.
	_, _, calls := probe.snapshot()
	for _, path := range []string{"/slow", "/garbage", "/5xx", "/badname", "/nostate"} {
		if n := calls[path]; n < 1 || n > maxChecks {
			t.Fatalf("%s asked %d times, want 1 to %d", path, n, maxChecks)
		}
	}
}

func TestBrokerCheckbackProducerCallWinsOverCheckInFlight(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	entered := make(chan string, 2)
	release := make(chan struct{})
	answers := map[string]checkback.Answer{}
	var mu sync.Mutex
	url := producerServer(t, env.store, "g", checkback.CheckerFunc(func(ctx context.Context, req checkback.Request) (checkback.Answer, error) {
		entered <- req.ID
		select {
		case <-release:
		case <-ctx.Done():
			return checkback.AnswerUnknown, ctx.Err()
		}
		mu.Lock()
		defer mu.Unlock()
		return answers[req.ID], nil
	}))
	// Registered after the producer server, so it runs first: a test that
	// failed before releasing the checks does not leave Close waiting on them.
	releaseChecks := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseChecks)
	scanner := testScanner(t, env.store, ScannerConfig{CallTimeout: 10 * time.Second})
	// The check answers rollback while the producer's commit arrives, and
	// the reverse.
	commitID := prepareOne(t, env.store, halfmsg.PrepareRequest{CheckbackURL: url, CheckTimeout: time.Millisecond})
	rollbackID := prepareOne(t, env.store, halfmsg.PrepareRequest{CheckbackURL: url, CheckTimeout: time.Millisecond})
	mu.Lock()
	answers[commitID], answers[rollbackID] = checkback.AnswerRollback, checkback.AnswerCommit
	mu.Unlock()
	// One scan must claim both: wait until both are due by the database's
	// clock, not only by ours.
	waitDue(t, env.db, commitID, rollbackID)
	done := make(chan error, 1)
	go func() { _, err := scanner.Scan(ctx); done <- err }()
	for range 2 {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("checks did not reach the producer")
		}
	}
	if st, err := env.client.Commit(ctx, commitID); err != nil || st != halfmsg.StateCommitted {
		t.Fatalf("commit during check: %v, %v", st, err)
	}
	if st, err := env.client.Rollback(ctx, rollbackID); err != nil || st != halfmsg.StateRolledBack {
		t.Fatalf("rollback during check: %v, %v", st, err)
	}
	releaseChecks()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("scan did not return within 20s of the checks' release")
	}
	for id, want := range map[string]halfmsg.State{commitID: halfmsg.StateCommitted, rollbackID: halfmsg.StateRolledBack} {
		info, err := env.store.Get(ctx, id)
		if err != nil || info.State != want {
			t.Fatalf("%s: %+v, %v; want %s", id, info, err, want)
		}
		checks, _ := env.store.Checks(ctx, id)
		if len(checks) != 1 {
			t.Fatalf("%s: %d checks recorded, want 1", id, len(checks))
		}
	}
}
