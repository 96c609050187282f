package halfmsg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

// holdBroker answers prepares and ends, single or batched: ids starting
// with "dup" are conflicts, "theirs" forbidden, "nope" not found. While
// hold is set, the first request waits until release is closed (or the
// client gives up). noBatch answers the batch endpoints 404, as a broker
// without them.
type holdBroker struct {
	release chan struct{} // closed by the test
	stop    chan struct{} // closed when the test ends
	hold    bool
	noBatch bool

	mu       sync.Mutex
	requests []string // "path id,id,…" per request, in arrival order
	held     chan struct{}
	inFlight int
	maxIn    int
	gaveUp   int // requests whose client went away while held
}

func newHoldBroker(t *testing.T, hold bool) (*holdBroker, *httptest.Server) {
	f := &holdBroker{release: make(chan struct{}), stop: make(chan struct{}), hold: hold, held: make(chan struct{})}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	// Runs first: srv.Close waits for the handlers.
	t.Cleanup(func() { close(f.stop) })
	return f, srv
}

func (f *holdBroker) errItem(id string) *ItemResult {
	switch {
	case strings.HasPrefix(id, "dup"):
		return &ItemResult{ID: id, Status: http.StatusConflict, Error: &ErrorDetail{Code: CodeConflict, Message: "id exists"}}
	case strings.HasPrefix(id, "theirs"):
		return &ItemResult{ID: id, Status: http.StatusForbidden, Error: &ErrorDetail{Code: CodeForbidden, Message: "another group's"}}
	case strings.HasPrefix(id, "nope"):
		return &ItemResult{ID: id, Status: http.StatusNotFound, Error: &ErrorDetail{Code: CodeNotFound, Message: "no such message"}}
	}
	return nil
}

func (f *holdBroker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	first, hold, release := len(f.requests) == 0, f.hold, f.release
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	var (
		ids   []string
		batch bool
	)
	switch r.URL.Path {
	case "/v1/half-messages:prepare-batch", "/v1/half-messages:end-batch":
		batch = true
		var b struct {
			Messages []struct{ ID string } `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, m := range b.Messages {
			ids = append(ids, m.ID)
		}
	case "/v1/half-messages":
		var b PrepareBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ids = []string{b.ID}
	default:
		ids = []string{strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/half-messages/"), "/")[0]}
	}
	f.mu.Lock()
	f.requests = append(f.requests, r.URL.Path+" "+strings.Join(ids, ","))
	f.mu.Unlock()
	if first && hold {
		close(f.held)
		select {
		case <-release:
		case <-f.stop:
			return
		case <-r.Context().Done():
			f.mu.Lock()
			f.gaveUp++
			f.mu.Unlock()
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	state := StatePrepared
	if strings.HasSuffix(r.URL.Path, "commit") || strings.HasSuffix(r.URL.Path, "end-batch") {
		state = StateCommitted
	}
	if batch && f.noBatch {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(ErrorBody{Error: ErrorDetail{Code: CodeNotFound, Message: "no such endpoint"}})
		return
	}
	if !batch {
		if e := f.errItem(ids[0]); e != nil {
			w.WriteHeader(e.Status)
			_ = json.NewEncoder(w).Encode(ErrorBody{Error: *e.Error})
			return
		}
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(StateBody{ID: ids[0], State: state})
		return
	}
	out := BatchBody{}
	for _, id := range ids {
		if e := f.errItem(id); e != nil {
			out.Results = append(out.Results, *e)
			continue
		}
		out.Results = append(out.Results, ItemResult{ID: id, State: state, Status: http.StatusOK})
	}
	_ = json.NewEncoder(w).Encode(out)
}

func (f *holdBroker) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.requests...)
	// Sort the ids of each batch: callers queue in any order.
	for i, r := range out {
		path, ids, _ := strings.Cut(r, " ")
		s := strings.Split(ids, ",")
		sort.Strings(s)
		out[i] = path + " " + strings.Join(s, ",")
	}
	return out
}

// queued waits until n calls are queued in q.
func queued(t *testing.T, q *coalescer, n int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		q.mu.Lock()
		defer q.mu.Unlock()
		if len(q.queue) != n {
			return fmt.Errorf("%d calls queued, want %d", len(q.queue), n)
		}
		return nil
	})
}

// idle waits until q has no request in flight.
func idle(t *testing.T, q *coalescer) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.inFlight != 0 {
			return fmt.Errorf("%d requests in flight", q.inFlight)
		}
		return nil
	})
}

func prepareOf(c *Client, ctx context.Context, id string) (string, error) {
	return c.Prepare(ctx, PrepareRequest{ProducerGroup: "g", Message: txmsg.Message{ID: id, Topic: "t", Value: []byte("v")}})
}

// TestBrokerClientCoalescesConcurrentCalls: while a prepare is in flight,
// later prepares queue and go in one batch request, each caller getting
// its own message's result (errors.Is with the sentinels still works); the
// same for commits and rollbacks. A lone call goes at once, alone.
func TestBrokerClientCoalescesConcurrentCalls(t *testing.T) {
	t.Parallel()
	f, srv := newHoldBroker(t, true)
	c, err := NewClient(srv.URL, WithMaxBatchRequests(1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	type res struct {
		id  string
		err error
	}
	results := map[string]chan res{}
	for _, id := range []string{"first", "a", "dup-1", "theirs-1", "b"} {
		ch := make(chan res, 1)
		results[id] = ch
		go func() {
			got, err := prepareOf(c, ctx, id)
			ch <- res{got, err}
		}()
		if id == "first" {
			<-f.held
			continue
		}
	}
	queued(t, c.prepares, 4)
	close(f.release)
	for id, want := range map[string]error{"first": nil, "a": nil, "b": nil, "dup-1": txmsg.ErrConflict, "theirs-1": txmsg.ErrForbidden} {
		r := <-results[id]
		if want == nil && (r.err != nil || r.id != id) || want != nil && !errors.Is(r.err, want) {
			t.Errorf("prepare %s: %q, %v; want %v", id, r.id, r.err, want)
		}
	}
	// Callers get their results before the batch request counts as ended:
	// the lone call must find none in flight to go alone.
	idle(t, c.prepares)
	var ae *APIError
	if r, err := prepareOf(c, ctx, "dup-2"); !errors.As(err, &ae) || ae.Status != http.StatusConflict || r != "" {
		t.Errorf("lone duplicate: %q, %#v", r, err)
	}
	if st, err := c.Commit(ctx, "lone"); err != nil || st != StateCommitted {
		t.Errorf("lone commit: %v, %v", st, err)
	}
	want := []string{"/v1/half-messages first", "/v1/half-messages:prepare-batch a,b,dup-1,theirs-1",
		"/v1/half-messages dup-2", "/v1/half-messages/lone/commit lone"}
	if got := f.log(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("requests\n%q\nwant\n%q", got, want)
	}
}

// TestBrokerClientCoalescesEnds: commits and rollbacks queued behind one in
// flight share an end-batch request, each with its own action and result.
func TestBrokerClientCoalescesEnds(t *testing.T) {
	t.Parallel()
	f, srv := newHoldBroker(t, true)
	c, err := NewClient(srv.URL, WithMaxBatchRequests(1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	errs := map[string]chan error{}
	for _, id := range []string{"first", "a", "nope-1", "r"} {
		ch := make(chan error, 1)
		errs[id] = ch
		go func() {
			var err error
			if id == "r" {
				_, err = c.Rollback(ctx, id)
			} else {
				_, err = c.Commit(ctx, id)
			}
			ch <- err
		}()
		if id == "first" {
			<-f.held
		}
	}
	queued(t, c.ends, 3)
	var raws []string
	c.ends.mu.Lock()
	for _, bc := range c.ends.queue {
		raws = append(raws, string(bc.raw))
	}
	c.ends.mu.Unlock()
	sort.Strings(raws)
	if want := `[{"id":"a","action":"commit"} {"id":"nope-1","action":"commit"} {"id":"r","action":"rollback"}]`; fmt.Sprint(raws) != want {
		t.Errorf("queued %v, want %v", raws, want)
	}
	close(f.release)
	for id, want := range map[string]error{"first": nil, "a": nil, "r": nil, "nope-1": txmsg.ErrNotFound} {
		if err := <-errs[id]; want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("end %s: %v, want %v", id, err, want)
		}
	}
	if got, want := f.log(), []string{"/v1/half-messages/first/commit first", "/v1/half-messages:end-batch a,nope-1,r"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("requests %q, want %q", got, want)
	}
}

// TestBrokerClientCoalescingHonoursEachContext: a queued call whose ctx
// ends is taken out of the queue and never sent; a call whose batch request
// is in flight returns when its ctx ends while the request goes on for the
// others, and the request is cancelled once no caller waits for it.
func TestBrokerClientCoalescingHonoursEachContext(t *testing.T) {
	t.Parallel()
	f, srv := newHoldBroker(t, true)
	c, err := NewClient(srv.URL, WithMaxBatchRequests(1))
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { _, err := prepareOf(c, context.Background(), "first"); first <- err }()
	<-f.held
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() { _, err := prepareOf(c, ctx, "gone"); gone <- err }()
	queued(t, c.prepares, 1)
	kept := make(chan error, 1)
	go func() { _, err := prepareOf(c, context.Background(), "kept"); kept <- err }()
	queued(t, c.prepares, 2)
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "not sent") {
		t.Errorf("queued call with an ended ctx: %v, want context.Canceled, not sent", err)
	}
	queued(t, c.prepares, 1)
	close(f.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-kept; err != nil {
		t.Fatal(err)
	}
	if got, want := f.log(), []string{"/v1/half-messages first", "/v1/half-messages:prepare-batch kept"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("requests %q, want %q: the withdrawn call was sent", got, want)
	}

	// In flight: hold a batch request and let every caller give up.
	f2, srv2 := newHoldBroker(t, false)
	c2, err := NewClient(srv2.URL, WithMaxBatchRequests(1))
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	c2.prepares.mu.Lock()
	c2.prepares.inFlight = 1 // a request in flight: calls queue
	c2.prepares.mu.Unlock()
	f2.mu.Lock()
	f2.hold, f2.release = true, block
	f2.mu.Unlock()
	ctxs := make([]context.CancelFunc, 2)
	errs := make(chan error, 2)
	for i := range 2 {
		cctx, cancel := context.WithCancel(context.Background())
		ctxs[i] = cancel
		go func() { _, err := prepareOf(c2, cctx, fmt.Sprint("m", i)); errs <- err }()
	}
	queued(t, c2.prepares, 2)
	c2.prepares.release() // the request "in flight" ends: a batch request carries both
	<-f2.held
	for _, cancel := range ctxs {
		cancel()
		if err := <-errs; !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "in flight") {
			t.Errorf("call in flight with an ended ctx: %v, want context.Canceled, in flight", err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		f2.mu.Lock()
		defer f2.mu.Unlock()
		if f2.gaveUp != 1 {
			return errors.New("the batch request was not cancelled once no caller waited")
		}
		return nil
	})
	c2.prepares.wg.Wait()
}

// TestBrokerClientWithoutBatchEndpoints: against a broker without the batch
// endpoints (404), the queued calls are sent alone and succeed, and later
// calls go alone, until the retry interval passes; WithoutBatching never
// tries.
func TestBrokerClientWithoutBatchEndpoints(t *testing.T) {
	t.Parallel()
	for _, off := range []bool{false, true} {
		f, srv := newHoldBroker(t, true)
		f.noBatch = true
		opts := []ClientOption{WithMaxBatchRequests(1)}
		if off {
			opts = append(opts, WithoutBatching())
		}
		c, err := NewClient(srv.URL, opts...)
		if err != nil {
			t.Fatal(err)
		}
		c.batchRetry = time.Hour
		errs := make(chan error, 3)
		go func() { _, err := prepareOf(c, context.Background(), "first"); errs <- err }()
		<-f.held
		for _, id := range []string{"a", "b"} {
			go func() { _, err := prepareOf(c, context.Background(), id); errs <- err }()
		}
		if off {
			testenv.Eventually(t, 10*time.Second, func() error {
				if n := len(f.log()); n != 3 {
					return fmt.Errorf("%d requests", n)
				}
				return nil
			})
		} else {
			queued(t, c.prepares, 2)
		}
		close(f.release)
		for range 3 {
			if err := <-errs; err != nil {
				t.Fatalf("off=%t: %v", off, err)
			}
		}
		if _, err := prepareOf(c, context.Background(), "later"); err != nil {
			t.Fatal(err)
		}
		batches, singles := 0, 0
		for _, r := range f.log() {
			if strings.Contains(r, "-batch") {
				batches++
			} else {
				singles++
			}
		}
		if want := map[bool]int{false: 1, true: 0}[off]; batches != want || singles != 4 {
			t.Errorf("off=%t: %d batch requests and %d single ones (%q), want %d and 4", off, batches, singles, f.log(), want)
		}
		if c.batching() {
			t.Errorf("off=%t: batching on again right after a 404 (or WithoutBatching)", off)
		}
		if !off {
			// The retry interval passed: batching is tried again.
			c.batchOffUntil.Store(time.Now().Add(-time.Second).UnixNano())
			if !c.batching() {
				t.Error("batching still off after its retry interval")
			}
		}
	}
}

func TestBrokerClientOptions(t *testing.T) {
	t.Parallel()
	if _, err := NewClient("http://127.0.0.1:1", WithMaxBatchRequests(0)); err == nil || !strings.Contains(err.Error(), "max batch requests 0") {
		t.Fatalf("WithMaxBatchRequests(0): %v", err)
	}
}

// TestBrokerClientSecondRequestOnlyBesideAHungOne: at the default, calls
// that find a request in flight queue rather than leave beside it, and go
// in one batch when it comes back; a request that hangs past spareAfter
// has the queued calls leave beside it, so it holds nobody back for long.
func TestBrokerClientSecondRequestOnlyBesideAHungOne(t *testing.T) {
	t.Parallel()
	for _, hung := range []bool{false, true} {
		f, srv := newHoldBroker(t, true)
		c, err := NewClient(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		// Not hung: the first comes back long before spare.
		c.prepares.spare = map[bool]time.Duration{false: time.Hour, true: 10 * time.Millisecond}[hung]
		first := make(chan error, 1)
		go func() { _, err := prepareOf(c, context.Background(), "first"); first <- err }()
		<-f.held
		errs := make(chan error, 2)
		for _, id := range []string{"a", "b"} {
			go func() { _, err := prepareOf(c, context.Background(), id); errs <- err }()
		}
		if !hung {
			queued(t, c.prepares, 2)
			if got := f.log(); len(got) != 1 {
				t.Fatalf("requests %q, want only the first while it is young", got)
			}
			close(f.release)
		}
		for range 2 {
			select {
			case err := <-errs:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("hung=%t: calls held behind the first request; requests %q", hung, f.log())
			}
		}
		if hung {
			close(f.release)
		}
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		maxIn := f.maxIn
		f.mu.Unlock()
		if want := map[bool]int{false: 1, true: 2}[hung]; maxIn != want {
			t.Errorf("hung=%t: at most %d requests in flight (%q), want %d", hung, maxIn, f.log(), want)
		}
		if !hung {
			if got, want := f.log(), []string{"/v1/half-messages first", "/v1/half-messages:prepare-batch a,b"}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("requests %q, want %q", got, want)
			}
		}
	}
}
