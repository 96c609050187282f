package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
)

// memStore is an in-memory Store: every message is due once.
type memStore struct {
	mu      sync.Mutex
	due     []Claim
	results map[string]CheckResult
}

func (s *memStore) ClaimDue(_ context.Context, limit int, _ time.Duration) ([]Claim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(limit, len(s.due))
	out := append([]Claim(nil), s.due[:n]...)
	s.due = s.due[n:]
	return out, nil
}

func (s *memStore) RecordChecks(_ context.Context, recs []CheckRecord) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.results[r.Claim.ID] = r.Result
	}
	return nil
}

func TestCheckbackScannerBoundsConcurrency(t *testing.T) {
	t.Parallel()
	const concurrency = 4
	gauge := &inFlightGauge{}
	url := gauge.producer(t, 5*time.Millisecond, func(req checkback.Request) checkback.Answer {
		if strings.HasSuffix(req.ID, "0") {
			return checkback.AnswerRollback
		}
		return checkback.AnswerCommit
	})
	store := dueStore(url, 200)
	s, err := NewScanner(store, ScannerConfig{Concurrency: concurrency, Policy: loopback()})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Scan(context.Background())
	if err != nil || n != 200 {
		t.Fatalf("scan checked %d (%v), want 200", n, err)
	}
	if top := gauge.max(); top > concurrency || top < 2 {
		t.Fatalf("%d calls in flight at most, want 2 to %d", top, concurrency)
	}
	for i := range 200 {
		r := store.results[fmt.Sprintf("m%d", i)]
		want := checkback.AnswerCommit
		if i%10 == 0 {
			want = checkback.AnswerRollback
		}
		if r.Answer != want || r.Err != nil {
			t.Fatalf("m%d: %+v, want %v", i, r, want)
		}
	}
}

func TestCheckbackScannerSchedulesUnknownAndDiscards(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(checkback.Handler(checkback.CheckerFunc(func(context.Context, checkback.Request) (checkback.Answer, error) {
		return 0, errors.New("database down")
	}), checkback.WithSecret(testSecret)))
	defer srv.Close()
	store := &memStore{results: map[string]CheckResult{}, due: []Claim{
		{Request: checkback.Request{ID: "early", CheckCount: 2}, URL: srv.URL, Secret: testSecret, MaxChecks: 5, Interval: 100 * time.Millisecond},
		{Request: checkback.Request{ID: "last", CheckCount: 5}, URL: srv.URL, Secret: testSecret, MaxChecks: 5, Interval: 100 * time.Millisecond},
		{Request: checkback.Request{ID: "capped", CheckCount: 9}, URL: srv.URL, Secret: testSecret, MaxChecks: 15, Interval: 100 * time.Millisecond},
	}}
	s, err := NewScanner(store, ScannerConfig{MaxInterval: 300 * time.Millisecond, Policy: loopback()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A checker error is answered as unknown: a clean answer, not an error.
	early := store.results["early"]
	if early.Answer != checkback.AnswerUnknown || early.Err != nil || early.Discard ||
		early.NextCheck < 100*time.Millisecond || early.NextCheck > 200*time.Millisecond {
		t.Fatalf("early: %+v", early)
	}
	if last := store.results["last"]; !last.Discard {
		t.Fatalf("last: %+v, want discarded", last)
	}
	if capped := store.results["capped"]; capped.NextCheck > 300*time.Millisecond || capped.NextCheck < 150*time.Millisecond {
		t.Fatalf("capped: next check in %v, want within [max/2, max]", capped.NextCheck)
	}
}

func TestCheckbackCallRejectsBadAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   checkback.Answer
		bad    bool
	}{
		{"commit", 200, `{"state":"commit"}`, checkback.AnswerCommit, false},
		{"rollback", 200, `{"state":"rollback"}`, checkback.AnswerRollback, false},
		{"unknown", 200, `{"state":"unknown"}`, checkback.AnswerUnknown, false},
		{"garbage", 200, `<html>`, 0, true},
		{"no state", 200, `{}`, 0, true},
		{"bad state", 200, `{"state":"maybe"}`, 0, true},
		{"server error", 500, `{"state":"commit"}`, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got checkback.Request
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewDecoder(r.Body).Decode(&got)
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			req := checkback.Request{ID: "m1", ProducerGroup: "g", Topic: "t", Key: "k", Headers: map[string]string{"a": "b"}, CheckCount: 3}
			a, err := checkback.Call(context.Background(), srv.Client(), srv.URL, "", req)
			if tc.bad != errors.Is(err, checkback.ErrBadAnswer) || a != tc.want {
				t.Fatalf("answer %v, error %v; want %v, bad=%v", a, err, tc.want, tc.bad)
			}
			if err != nil && (strings.Contains(err.Error(), "html") || strings.Contains(err.Error(), "maybe")) {
				t.Fatalf("error %q repeats the answer", err)
			}
			if got.ID != "m1" || got.CheckCount != 3 || got.Headers["a"] != "b" || got.Key != "k" {
				t.Fatalf("producer got %+v", got)
			}
		})
	}
}

func TestCheckbackHandlerRejectsBadRequests(t *testing.T) {
	t.Parallel()
	h := checkback.Handler(checkback.CheckerFunc(func(context.Context, checkback.Request) (checkback.Answer, error) {
		return checkback.AnswerCommit, nil
	}), checkback.WithSecret(testSecret))
	for _, tc := range []struct {
		method, body string
		status       int
	}{
		{"GET", "", 405},
		{"POST", "nope", 400},
		{"POST", `{"topic":"t"}`, 400},
		{"POST", `{"id":"m"}`, 200},
		{"POST", `{"checks":[{"id":"a"},{"id":"b"}]}`, 200},
		{"POST", `{"checks":[]}`, 400},
		{"POST", `{"checks":[{"id":"a"},{"topic":"t"}]}`, 400},
		{"POST", `{"id":"m","checks":[{"id":"a"}]}`, 400},
		{"POST", `{"checks":[{"id":"a"}],"timeout_ms":-1}`, 400},
		{"POST", `{"checks":[` + strings.Repeat(`{"id":"a"},`, checkback.MaxBatch) + `{"id":"a"}]}`, 400},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tc.method, "/check", strings.NewReader(tc.body))
		req.Header.Set(checkback.SignatureHeader, checkback.Sign(testSecret, time.Now(), []byte(tc.body)))
		h.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Fatalf("%s %q: status %d, want %d", tc.method, tc.body, rec.Code, tc.status)
		}
	}
}

func TestCheckbackConfigValidate(t *testing.T) {
	t.Parallel()
	var raw ScannerConfig
	if err := raw.Validate(); err == nil {
		t.Fatal("Validate accepted a ScannerConfig without defaults")
	}
	c := raw.WithDefaults()
	if !reflect.DeepEqual(raw, ScannerConfig{}) {
		t.Fatalf("WithDefaults changed its receiver: %+v", raw)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Schedule != "@every 1s" || c.Concurrency != 64 || c.CallTimeout != 3*time.Second || c.MaxInterval != 5*time.Minute || c.Lease != 11*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	for _, bad := range []ScannerConfig{
		{Schedule: "every second"},
		{Concurrency: -1},
		{CallTimeout: time.Microsecond},
		{CallTimeout: time.Second, Lease: time.Second},
		// A claim may wait a call in the queue before its own.
		{CallTimeout: time.Second, Lease: 2 * time.Second},
	} {
		if err := bad.WithDefaults().Validate(); err == nil {
			t.Fatalf("%+v: want an error", bad)
		}
	}
}

// TestCheckbackScannerNeverAsksPastMaxChecks: a claim past its message's
// max checks (the last check was claimed but never recorded, as after a
// crash) discards the message without asking the producer again.
func TestCheckbackScannerNeverAsksPastMaxChecks(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := httptest.NewServer(checkback.Handler(checkback.CheckerFunc(func(context.Context, checkback.Request) (checkback.Answer, error) {
		calls.Add(1)
		return checkback.AnswerCommit, nil
	}), checkback.WithSecret(testSecret)))
	defer srv.Close()
	store := &memStore{results: map[string]CheckResult{}, due: []Claim{
		{Request: checkback.Request{ID: "last", CheckCount: 5}, URL: srv.URL, Secret: testSecret, MaxChecks: 5, Interval: time.Second},
		{Request: checkback.Request{ID: "past", CheckCount: 6}, URL: srv.URL, Secret: testSecret, MaxChecks: 5, Interval: time.Second},
	}}
	s, err := NewScanner(store, ScannerConfig{Policy: loopback()})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Scan(context.Background()); err != nil || n != 2 {
		t.Fatalf("scan checked %d (%v), want 2", n, err)
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("producer asked %d times, want 1 (only the last allowed check)", got)
	}
	if last := store.results["last"]; last.Answer != checkback.AnswerCommit || last.Discard {
		t.Fatalf("last allowed check: %+v, want commit", last)
	}
	past := store.results["past"]
	if !past.Discard || past.Answer != checkback.AnswerUnknown || past.Err == nil {
		t.Fatalf("check past max_checks: %+v, want discarded unasked with an error saying why", past)
	}
}

// greedyStore returns every due message whatever the limit, breaking the
// Store contract.
type greedyStore struct{ *memStore }

func (s greedyStore) ClaimDue(ctx context.Context, _ int, lease time.Duration) ([]Claim, error) {
	return s.memStore.ClaimDue(ctx, 1<<30, lease)
}

// TestCheckbackScannerBoundsConcurrencyWithAGreedyStore: a Store that
// returns more claims than asked neither lifts the bound on calls in
// flight nor hangs the scan.
func TestCheckbackScannerBoundsConcurrencyWithAGreedyStore(t *testing.T) {
	t.Parallel()
	const concurrency = 2
	gauge := &inFlightGauge{}
	url := gauge.producer(t, 2*time.Millisecond, func(checkback.Request) checkback.Answer { return checkback.AnswerCommit })
	store := dueStore(url, 40)
	s, err := NewScanner(greedyStore{store}, ScannerConfig{Concurrency: concurrency, Policy: loopback()})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := s.Scan(context.Background())
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.err != nil || r.n != 40 {
			t.Fatalf("scan checked %d (%v), want 40", r.n, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Scan did not return within 20s")
	}
	if top := gauge.max(); top > concurrency {
		t.Fatalf("%d calls in flight at most, want at most %d", top, concurrency)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.results) != 40 {
		t.Fatalf("%d checks recorded, want 40", len(store.results))
	}
}

// inFlightGauge records the most check-back calls a producer served at once.
type inFlightGauge struct {
	mu            sync.Mutex
	inFlight, top int
}

// producer serves check-backs that each take hold, answering with answer,
// and counts them in g; it is closed when the test ends.
func (g *inFlightGauge) producer(t *testing.T, hold time.Duration, answer func(checkback.Request) checkback.Answer) string {
	t.Helper()
	srv := httptest.NewServer(checkback.Handler(checkback.CheckerFunc(func(ctx context.Context, req checkback.Request) (checkback.Answer, error) {
		g.mu.Lock()
		g.inFlight++
		g.top = max(g.top, g.inFlight)
		g.mu.Unlock()
		defer func() {
			g.mu.Lock()
			g.inFlight--
			g.mu.Unlock()
		}()
		// Hold the call a little so that calls pile up if they can.
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		return answer(req), nil
	}), checkback.WithSecret(testSecret)))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (g *inFlightGauge) max() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.top
}

// dueStore is a memStore holding n claims m0…m(n-1) due now, asked at url.
func dueStore(url string, n int) *memStore {
	store := &memStore{results: map[string]CheckResult{}}
	for i := range n {
		store.due = append(store.due, Claim{Request: checkback.Request{ID: fmt.Sprintf("m%d", i), CheckCount: 1},
			URL: url, Secret: testSecret, MaxChecks: 3, Interval: time.Second})
	}
	return store
}

// batchStore is a memStore that holds its first RecordChecks until release
// is closed, notes the size of every batch, and fails the records whose id
// is in fail.
type batchStore struct {
	*memStore
	release <-chan struct{}
	fail    map[string]bool
	first   atomic.Bool
	sizes   []int
}

func (s *batchStore) RecordChecks(ctx context.Context, recs []CheckRecord) []error {
	if s.first.CompareAndSwap(false, true) {
		select {
		case <-s.release:
		case <-ctx.Done():
		}
	}
	var ok []CheckRecord
	errs := make([]error, len(recs))
	for i, r := range recs {
		if s.fail[r.Claim.ID] {
			errs[i] = errors.New("injected")
			continue
		}
		ok = append(ok, r)
	}
	s.memStore.RecordChecks(ctx, ok)
	s.mu.Lock()
	s.sizes = append(s.sizes, len(recs))
	s.mu.Unlock()
	return errs
}

// countErrors counts CheckError calls by kind.
type countErrors struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *countErrors) CheckError(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[kind]++
}

// TestCheckbackScannerRecordsInBatches: results that finish while a record
// is being written are written together in the next one, not one by one;
// a record the store fails is counted as a record error alone, and the
// others of its batch are kept.
func TestCheckbackScannerRecordsInBatches(t *testing.T) {
	t.Parallel()
	const n = 40
	release := make(chan struct{})
	var served atomic.Int32
	gauge := &inFlightGauge{}
	url := gauge.producer(t, time.Millisecond, func(checkback.Request) checkback.Answer {
		if served.Add(1) == n {
			close(release)
		}
		return checkback.AnswerCommit
	})
	store := &batchStore{memStore: dueStore(url, n), release: release, fail: map[string]bool{"m7": true}}
	errCount := &countErrors{counts: map[string]int{}}
	s, err := NewScanner(store, ScannerConfig{Concurrency: 4, Policy: loopback()}, WithScannerHooks(errCount))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Scan(context.Background()); err != nil || got != n {
		t.Fatalf("scan checked %d (%v), want %d", got, err, n)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.results) != n-1 {
		t.Fatalf("%d checks recorded, want %d (all but the failed one)", len(store.results), n-1)
	}
	if _, ok := store.results["m7"]; ok {
		t.Fatal("the failed record was stored")
	}
	if top := slices.Max(store.sizes); top < 2 || len(store.sizes) >= n {
		t.Fatalf("batches of %v: want the results that queued behind the first written together", store.sizes)
	}
	errCount.mu.Lock()
	defer errCount.mu.Unlock()
	if errCount.counts["record"] != 1 {
		t.Fatalf("record errors %v, want 1", errCount.counts)
	}
}

// TestCheckbackScannerRunScansAtStart: Run checks the messages already due
// when it starts, without waiting for the schedule's first tick.
func TestCheckbackScannerRunScansAtStart(t *testing.T) {
	t.Parallel()
	gauge := &inFlightGauge{}
	url := gauge.producer(t, 0, func(checkback.Request) checkback.Answer { return checkback.AnswerCommit })
	store := dueStore(url, 3)
	s, err := NewScanner(store, ScannerConfig{Schedule: "@every 1h", Policy: loopback()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		store.mu.Lock()
		defer store.mu.Unlock()
		if len(store.results) != 3 {
			return fmt.Errorf("%d of 3 checks recorded", len(store.results))
		}
		return nil
	})
}

// TestCheckbackClientKeepsAnIdleConnectionPerCall: the check-back client
// may keep a connection idle for every call in flight, to one producer and
// in total, also above net/http's default total of 100: one closed for want
// of an idle slot is a new dial (and TLS handshake) for a later check.
func TestCheckbackClientKeepsAnIdleConnectionPerCall(t *testing.T) {
	t.Parallel()
	rules, err := loopback().rules()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []int{16, 400} {
		tr := newCheckbackClient(rules, c).Transport.(*http.Transport)
		if tr.MaxIdleConnsPerHost != c || tr.MaxIdleConns < c {
			t.Fatalf("concurrency %d: %d idle connections per host, %d in all; want %d and at least %d",
				c, tr.MaxIdleConnsPerHost, tr.MaxIdleConns, c, c)
		}
	}
}

// batchGauge is a producer's BatchChecker that answers commit for ids
// ending in an even digit and rollback otherwise, and counts the requests
// it serves, the most checks one carried and the most in flight at once.
type batchGauge struct {
	mu                              sync.Mutex
	requests, widest, inFlight, top int
}

func (g *batchGauge) enter(n int) func() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.requests++
	g.widest = max(g.widest, n)
	g.inFlight += n
	g.top = max(g.top, g.inFlight)
	return func() {
		g.mu.Lock()
		g.inFlight -= n
		g.mu.Unlock()
	}
}

func parityAnswer(id string) checkback.Answer {
	if (id[len(id)-1]-'0')%2 == 0 {
		return checkback.AnswerCommit
	}
	return checkback.AnswerRollback
}

func (g *batchGauge) Check(_ context.Context, req checkback.Request) (checkback.Answer, error) {
	defer g.enter(1)()
	time.Sleep(time.Millisecond)
	return parityAnswer(req.ID), nil
}

func (g *batchGauge) CheckBatch(_ context.Context, reqs []checkback.Request) ([]checkback.Answer, error) {
	defer g.enter(len(reqs))()
	time.Sleep(time.Millisecond)
	as := make([]checkback.Answer, len(reqs))
	for i, r := range reqs {
		as[i] = parityAnswer(r.ID)
	}
	return as, nil
}

// TestCheckbackScannerBatchesWhereTheProducerTakesThem: once a producer's
// answer offers batches, the scanner asks it about many messages per
// request, at most maxCallBatch, never more checks in flight than its
// concurrency, and records each message's own answer.
func TestCheckbackScannerBatchesWhereTheProducerTakesThem(t *testing.T) {
	t.Parallel()
	const n, concurrency = 400, 64
	g := &batchGauge{}
	srv := httptest.NewServer(checkback.Handler(g, checkback.WithSecret(testSecret)))
	t.Cleanup(srv.Close)
	scanParity(t, srv.URL, n, concurrency)
	g.mu.Lock()
	defer g.mu.Unlock()
	// The first claims go one per request: nothing said yet that the
	// producer takes batches.
	if g.requests > n/2 || g.widest < 2 || g.widest > maxCallBatch {
		t.Fatalf("%d requests for %d checks, the widest of %d: want batches of 2 to %d", g.requests, n, g.widest, maxCallBatch)
	}
	if g.top > concurrency {
		t.Fatalf("%d checks in flight at once, want at most %d", g.top, concurrency)
	}
}

// scanParity scans n messages due at url with a scanner of concurrency and
// fails the test unless each recorded its parityAnswer, with no error.
func scanParity(t *testing.T, url string, n, concurrency int) {
	t.Helper()
	store := dueStore(url, n)
	s, err := NewScanner(store, ScannerConfig{Concurrency: concurrency, Policy: loopback()})
	if err != nil {
		t.Fatal(err)
	}
	if got := scanWithin(t, s, context.Background()); got != n {
		t.Fatalf("scan checked %d, want %d", got, n)
	}
	for i := range n {
		id := fmt.Sprintf("m%d", i)
		if r := store.results[id]; r.Answer != parityAnswer(id) || r.Err != nil {
			t.Fatalf("%s: %+v, want %v", id, r, parityAnswer(id))
		}
	}
}

// scanWithin runs s.Scan(ctx) and returns how many it checked, failing the
// test if it errs or takes more than 20s.
func scanWithin(t *testing.T, s *Scanner, ctx context.Context) int {
	t.Helper()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := s.Scan(ctx)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("scan: %v", r.err)
		}
		return r.n
	case <-time.After(20 * time.Second):
		t.Fatal("Scan did not return within 20s")
		return 0
	}
}

// TestCheckbackScannerAsksOneByOneWhereBatchesAreNotTaken: a producer that
// speaks only the one-check protocol never gets a batch, and one that
// offers batches but does not answer them (rolled back to an older version:
// 400; or failing: 500) gets each message asked again alone within the
// same check: every message is answered, none counted as failed.
func TestCheckbackScannerAsksOneByOneWhereBatchesAreNotTaken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		offers      bool
		batchStatus int
	}{{"one-check protocol", false, 0}, {"refuses batches", true, http.StatusBadRequest}, {"fails batches", true, http.StatusInternalServerError}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 200
			var batches, singles atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var req struct {
					checkback.Request
					Checks []checkback.Request `json:"checks"`
				}
				if json.NewDecoder(r.Body).Decode(&req) != nil || req.ID == "" {
					batches.Add(1)
					http.Error(w, "no batches here", tc.batchStatus)
					return
				}
				singles.Add(1)
				if tc.offers {
					w.Header().Set(checkback.BatchHeader, "64")
				}
				_ = json.NewEncoder(w).Encode(map[string]checkback.Answer{"state": parityAnswer(req.ID)})
			}))
			t.Cleanup(srv.Close)
			scanParity(t, srv.URL, n, 64)
			if singles.Load() != n || (batches.Load() > 0) != tc.offers {
				t.Fatalf("%d single requests, %d batches not answered; want %d, and batches only where offered",
					singles.Load(), batches.Load(), n)
			}
		})
	}
}

// TestCheckbackScannerKeepsTheAnswersOfASplitBatch: a call whose checks
// are too big for one request goes as several; when a later one fails, the
// answers of those before it are recorded, and only the failed part's
// checks are asked again one by one.
func TestCheckbackScannerKeepsTheAnswersOfASplitBatch(t *testing.T) {
	t.Parallel()
	const n = 64
	var batches, inBatches, singles atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			checkback.Request
			Checks []checkback.Request `json:"checks"`
		}
		if json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		w.Header().Set(checkback.BatchHeader, "64")
		if req.ID != "" {
			singles.Add(1)
			_ = json.NewEncoder(w).Encode(map[string]checkback.Answer{"state": parityAnswer(req.ID)})
			return
		}
		if batches.Add(1)%2 == 0 {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return
		}
		inBatches.Add(int32(len(req.Checks)))
		states := make([]checkback.Answer, len(req.Checks))
		for i, c := range req.Checks {
			states[i] = parityAnswer(c.ID)
		}
		_ = json.NewEncoder(w).Encode(map[string][]checkback.Answer{"states": states})
	}))
	t.Cleanup(srv.Close)
	store := dueStore(srv.URL, n+1)
	// 40 KiB each: 64 checks make a 2.5 MiB batch, split into requests of 16.
	// Not more: each split encodes its half again, and under -race encoding
	// 200 KiB checks took the scan past 20s.
	for i := range store.due {
		store.due[i].Headers = map[string]string{"big": strings.Repeat("x", 40<<10)}
	}
	due := store.due[1:]
	store.due = store.due[:1]
	// Sixty-four 40 KiB checks, split batches and then single calls share
	// one call's deadline: on a loaded machine under -race the default 3s
	// ran out before the last single call.
	s, err := NewScanner(store, ScannerConfig{Concurrency: 64, Policy: loopback(), CallTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The first check, alone, offers batches; the scan after it sends them.
	scanWithin(t, s, context.Background())
	store.due = due
	scanWithin(t, s, context.Background())
	for i := range n + 1 {
		id := fmt.Sprintf("m%d", i)
		if r := store.results[id]; r.Answer != parityAnswer(id) || r.Err != nil {
			t.Fatalf("%s: %+v, want %v", id, r, parityAnswer(id))
		}
	}
	if batches.Load() < 2 || inBatches.Load() == 0 {
		t.Fatalf("%d batch requests answering %d checks: want split batches, some answered", batches.Load(), inBatches.Load())
	}
	if got, want := singles.Load()+inBatches.Load(), int32(n)+1; got > want {
		t.Fatalf("%d checks asked alone and %d answered in batches: checks a batch answered were asked again",
			singles.Load(), inBatches.Load())
	}
}

// TestCheckbackScannerStopsWithBatchesInFlight: a scan whose context ends
// while batches wait at the producer returns at once and records none of
// their checks (they stay counted, asked again once their lease passes).
func TestCheckbackScannerStopsWithBatchesInFlight(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var batches atomic.Int32
	hold := checkback.Handler(holdBatches{release: release, batches: &batches}, checkback.WithSecret(testSecret))
	srv := httptest.NewServer(hold)
	t.Cleanup(srv.Close)
	store := dueStore(srv.URL, 200)
	s, err := NewScanner(store, ScannerConfig{Concurrency: 64, Policy: loopback()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		for start := time.Now(); batches.Load() == 0 && time.Since(start) < 10*time.Second; {
			time.Sleep(time.Millisecond)
		}
	}()
	scanWithin(t, s, ctx)
	if batches.Load() == 0 {
		t.Fatal("no batch reached the producer")
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	for id, r := range store.results {
		if r.Answer != checkback.AnswerCommit {
			t.Fatalf("%s recorded %+v after the scan's context ended; want only answers that came before", id, r)
		}
	}
	if len(store.results) == 200 {
		t.Fatal("every check recorded, although the batches were held until the scan stopped")
	}
}

// holdBatches answers single checks commit at once and holds every batch
// until release is closed or its request ends, counting batches.
type holdBatches struct {
	release <-chan struct{}
	batches *atomic.Int32
}

func (holdBatches) Check(context.Context, checkback.Request) (checkback.Answer, error) {
	return checkback.AnswerCommit, nil
}

func (h holdBatches) CheckBatch(ctx context.Context, reqs []checkback.Request) ([]checkback.Answer, error) {
	h.batches.Add(1)
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return nil, errors.New("held")
}

// timedStore is a memStore that notes when each message was claimed.
type timedStore struct {
	*memStore
	era     func() int
	mu      sync.Mutex
	claimed map[string]int
}

// ClaimDue notes, for each claim, the round of calls under way when it was
// claimed (see heldAnswers).
func (s *timedStore) ClaimDue(ctx context.Context, limit int, lease time.Duration) ([]Claim, error) {
	cs, err := s.memStore.ClaimDue(ctx, limit, lease)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		s.claimed[c.ID] = s.era()
	}
	return cs, err
}

// heldAnswers answers every check, alone or in a batch, after hold, and
// notes the round of the call that answered each message: calls started
// before any call ended are round 1, and a call is one round later than the
// latest round that had ended when it started. Rounds count calls, not
// time, so a slow machine does not change them.
type heldAnswers struct {
	hold     time.Duration
	mu       sync.Mutex
	ended    int // the latest round of a call that ended
	answered map[string]int
}

// era is the round of calls under way now.
func (h *heldAnswers) era() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ended + 1
}

func (h *heldAnswers) Check(ctx context.Context, req checkback.Request) (checkback.Answer, error) {
	as, err := h.CheckBatch(ctx, []checkback.Request{req})
	if err != nil {
		return 0, err
	}
	return as[0], nil
}

func (h *heldAnswers) CheckBatch(ctx context.Context, reqs []checkback.Request) ([]checkback.Answer, error) {
	round := h.era()
	select {
	case <-time.After(h.hold):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ended = max(h.ended, round)
	as := make([]checkback.Answer, len(reqs))
	for i, r := range reqs {
		h.answered[r.ID] = round
		as[i] = checkback.AnswerCommit
	}
	return as, nil
}

// TestCheckbackScannerStartsEachClaimWithinOneCall: calls of uneven sizes
// (16, 16, 16, then a last check alone, 16, 16, 16, 15, then 16) leave part
// of the concurrency unused while the next call does not fit; still no claim
// waits more than about one call before its own, since its lease covers two.
// With twice the concurrency in claims the last call of 16 started only in
// the third round of calls: answered three calls after it was claimed.
func TestCheckbackScannerStartsEachClaimWithinOneCall(t *testing.T) {
	t.Parallel()
	const hold = 2 * time.Second
	h := &heldAnswers{hold: hold, answered: map[string]int{}}
	srv := httptest.NewServer(checkback.Handler(h, checkback.WithSecret(testSecret)))
	t.Cleanup(srv.Close)
	// Three producers behind one server, told apart by their URLs' paths.
	urls := []string{srv.URL + "/a", srv.URL + "/b", srv.URL + "/d"}
	claim := func(id, url string, check int) Claim {
		return Claim{Request: checkback.Request{ID: id, CheckCount: check}, URL: url, Secret: testSecret,
			MaxChecks: 3, Interval: time.Second}
	}
	store := &timedStore{memStore: &memStore{results: map[string]CheckResult{}}, era: h.era, claimed: map[string]int{}}
	s, err := NewScanner(store, ScannerConfig{Concurrency: 64, CallTimeout: 5 * hold, Policy: loopback()})
	if err != nil {
		t.Fatal(err)
	}
	// A first scan teaches the scanner that each producer takes batches.
	for i, u := range urls {
		store.due = append(store.due, claim(fmt.Sprintf("warm%d", i), u, 1))
	}
	scanWithin(t, s, context.Background())
	var due []Claim
	add := func(prefix, url string, n int) {
		for i := range n {
			due = append(due, claim(fmt.Sprintf("%s%d", prefix, i), url, 1))
		}
	}
	add("a", urls[0], 48)
	due = append(due, claim("last", urls[0], 3))
	add("b", urls[1], 63)
	add("d", urls[2], 16)
	store.mu.Lock()
	store.due = due
	store.mu.Unlock()
	if got := scanWithin(t, s, context.Background()); got != len(due) {
		t.Fatalf("scan checked %d, want %d", got, len(due))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	store.mu.Lock()
	defer store.mu.Unlock()
	for _, c := range due {
		round, ok := h.answered[c.ID]
		if !ok {
			t.Fatalf("%s was not answered", c.ID)
		}
		// Claimed while round r ran, a check's call should start in round
		// r+1 at the latest, once one call under way ended: not later.
		if era := store.claimed[c.ID]; round > era+1 {
			t.Fatalf("%s, claimed in round %d of calls, was answered by a call of round %d: it waited for more than one call",
				c.ID, era, round)
		}
	}
}
