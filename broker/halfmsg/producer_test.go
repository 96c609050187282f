package halfmsg

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
)

// fakeBroker answers the API's prepare, commit and rollback calls as a test
// sets: prepare and end answer with the status and code their function
// returns (200 when it is nil), after waiting on the channel it may return.
// Every wait also ends with the request, and when the test ends.
type fakeBroker struct {
	url  string
	stop chan struct{}

	mu       sync.Mutex
	prepare  func(id string) (wait <-chan struct{}, status int, code string)
	end      func(call string) (wait <-chan struct{}, status int, code string)
	prepares chan string // ids of the prepares, as they arrive
	calls    []string    // "commit ID" and "rollback ID", as they were answered
}

func newFakeBroker(t *testing.T) *fakeBroker {
	t.Helper()
	f := &fakeBroker{prepares: make(chan string, 16), stop: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	// Runs first: srv.Close waits for the handlers.
	t.Cleanup(func() { close(f.stop) })
	f.url = srv.URL
	return f
}

func (f *fakeBroker) serve(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, ":") {
		// A broker without batch endpoints: the client falls back to
		// single calls, whenever its calls queue.
		http.NotFound(w, r)
		return
	}
	var (
		id, call string
		answer   func(string) (<-chan struct{}, int, string)
	)
	f.mu.Lock()
	if r.URL.Path == "/v1/half-messages" {
		var b PrepareBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			f.mu.Unlock()
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, answer = b.ID, f.prepare
		f.prepares <- id
	} else {
		rest := strings.TrimPrefix(r.URL.Path, "/v1/half-messages/")
		i := strings.LastIndexByte(rest, '/')
		id, call = rest[:i], rest[i+1:]+" "+rest[:i]
		answer = f.end
	}
	f.mu.Unlock()
	status, code := http.StatusOK, ""
	if answer != nil {
		key := id
		if call != "" {
			key = call
		}
		var wait <-chan struct{}
		wait, status, code = answer(key)
		if wait != nil {
			select {
			case <-wait:
			case <-r.Context().Done():
				return
			case <-f.stop:
				return
			}
		}
	}
	if call != "" {
		f.mu.Lock()
		f.calls = append(f.calls, call)
		f.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	if status == 0 || status == http.StatusOK {
		_ = json.NewEncoder(w).Encode(StateBody{ID: id, State: StateCommitted})
		return
	}
	var eb ErrorBody
	eb.Error.Code, eb.Error.Message = code, "fake broker says "+code
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(eb)
}

// answered returns the end calls answered so far.
func (f *fakeBroker) answered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// producerEnv is a producer on a fresh database with a business table,
// talking to a fake broker.
type producerEnv struct {
	db     *sql.DB
	broker *fakeBroker
	errs   chan *EndError
}

func newProducerEnv(t *testing.T) *producerEnv {
	t.Helper()
	db := testenv.NewDB(t)
	if _, err := db.DB.Exec(`CREATE TABLE biz (id VARCHAR(64) PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	return &producerEnv{db: db.DB, broker: newFakeBroker(t), errs: make(chan *EndError, 16)}
}

func (e *producerEnv) producer(t *testing.T, opts ...ProducerOption) *Producer {
	t.Helper()
	c, err := NewClient(e.broker.url)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProducer(c, "g", e.db, append([]ProducerOption{WithProducerOnEndError(func(err *EndError) { e.errs <- err })}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return p
}

// committed returns how many committed ledger rows message id has, and
// business rows row.
func (e *producerEnv) committed(t *testing.T, id, row string) (ledger, biz int) {
	t.Helper()
	if err := e.db.QueryRow(`SELECT (SELECT COUNT(*) FROM txmsg_checkback_ledger WHERE msg_id = ?), (SELECT COUNT(*) FROM biz WHERE id = ?)`,
		id, row).Scan(&ledger, &biz); err != nil {
		t.Fatal(err)
	}
	return ledger, biz
}

// insert is a local transaction writing business row id; ran, when not nil,
// is closed once it has written it.
func insert(id string, ran chan struct{}) func(context.Context, *sql.Tx) error {
	return func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO biz (id) VALUES (?)`, id)
		if ran != nil {
			close(ran)
		}
		return err
	}
}

// receive waits for a value of ch, failing the test after a generous
// deadline instead of hanging.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s", what)
		panic("unreachable")
	}
}

// TestBrokerProducerCommitsLocallyOnlyAfterPrepare: the local transaction
// (ledger row, business row) runs while the prepare is in flight, under the
// id the producer made for a message without one, and commits only once the
// broker acknowledged the prepare.
func TestBrokerProducerCommitsLocallyOnlyAfterPrepare(t *testing.T) {
	t.Parallel()
	env := newProducerEnv(t)
	release := make(chan struct{})
	env.broker.prepare = func(string) (<-chan struct{}, int, string) { return release, 0, "" }
	p := env.producer(t)
	ran := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- p.SendInTransaction(context.Background(), txmsg.Message{Topic: "orders", Value: []byte("v")}, insert("order-1", ran))
	}()
	id := receive(t, env.broker.prepares, "prepare")
	receive(t, ran, "local transaction while the prepare is in flight")

	// The ledger row is written, under the id sent with the prepare, but
	// not committed.
	conn, err := env.db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var dirty string
	if _, err := conn.ExecContext(context.Background(), `SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED`); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRowContext(context.Background(), `SELECT msg_id FROM txmsg_checkback_ledger`).Scan(&dirty); err != nil || dirty != id || id == "" {
		t.Fatalf("uncommitted ledger row %q (%v), want the id of the prepare %q", dirty, err, id)
	}
	if n, b := env.committed(t, id, "order-1"); n != 0 || b != 0 {
		t.Fatalf("before the prepare's answer: %d ledger rows, %d business rows committed; want none", n, b)
	}
	select {
	case err := <-done:
		t.Fatalf("SendInTransaction returned %v before the prepare's answer", err)
	default:
	}
	close(release)
	if err := receive(t, done, "return from SendInTransaction"); err != nil {
		t.Fatal(err)
	}
	if n, b := env.committed(t, id, "order-1"); n != 1 || b != 1 {
		t.Fatalf("after the prepare's answer: %d ledger rows, %d business rows committed; want 1, 1", n, b)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := env.broker.answered(); len(got) != 1 || got[0] != "commit "+id {
		t.Fatalf("end calls %q, want the commit of %s", got, id)
	}
}

// TestBrokerProducerPrepareFailureRollsBackLocal: a prepare that fails
// after the local transaction ran rolls the transaction back and returns
// the prepare's error (and fn's, if it failed too); no end call is made.
func TestBrokerProducerPrepareFailureRollsBackLocal(t *testing.T) {
	t.Parallel()
	env := newProducerEnv(t)
	ran := make(chan struct{})
	env.broker.prepare = func(string) (<-chan struct{}, int, string) {
		return ran, http.StatusConflict, CodeConflict
	}
	p := env.producer(t)
	err := p.SendInTransaction(context.Background(), txmsg.Message{ID: "m1", Topic: "orders", Value: []byte("v")}, insert("order-1", ran))
	if !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("SendInTransaction = %v, want the prepare's conflict", err)
	}
	if n, b := env.committed(t, "m1", "order-1"); n != 0 || b != 0 {
		t.Fatalf("after a failed prepare: %d ledger rows, %d business rows committed; want none", n, b)
	}
	errFn := errors.New("business rule says no")
	err = p.SendInTransaction(context.Background(), txmsg.Message{ID: "m2", Topic: "orders", Value: []byte("v")},
		func(context.Context, *sql.Tx) error { return errFn })
	if !errors.Is(err, txmsg.ErrConflict) || !errors.Is(err, errFn) {
		t.Fatalf("SendInTransaction = %v, want the prepare's conflict and the function's error", err)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := env.broker.answered(); len(got) != 0 {
		t.Fatalf("end calls %q after failed prepares, want none", got)
	}
}

// TestBrokerProducerEndsInBackground: SendInTransaction returns before the
// message's end; a commit answered "overloaded" is retried, a rollback
// after a failed transaction is sent too, and a call the broker refuses for
// good is reported to the hook, not lost.
func TestBrokerProducerEndsInBackground(t *testing.T) {
	t.Parallel()
	env := newProducerEnv(t)
	release := make(chan struct{})
	var (
		mu    sync.Mutex
		tries = map[string]int{}
	)
	env.broker.end = func(call string) (<-chan struct{}, int, string) {
		mu.Lock()
		defer mu.Unlock()
		tries[call]++
		switch {
		case call == "commit held":
			return release, 0, ""
		case call == "commit busy" && tries[call] < 3:
			return nil, http.StatusServiceUnavailable, CodeOverloaded
		case call == "commit refused":
			return nil, http.StatusConflict, CodeConflict
		}
		return nil, 0, ""
	}
	p := env.producer(t)
	ctx := context.Background()
	send := func(id string, fn func(context.Context, *sql.Tx) error) error {
		return p.SendInTransaction(ctx, txmsg.Message{ID: id, Topic: "orders", Value: []byte("v")}, fn)
	}
	if err := send("held", insert("held", nil)); err != nil {
		t.Fatalf("commit held by the broker: %v, want SendInTransaction to return without waiting", err)
	}
	errFn := errors.New("business rule says no")
	if err := send("failed", func(context.Context, *sql.Tx) error { return errFn }); !errors.Is(err, errFn) {
		t.Fatalf("failed transaction: %v, want its error", err)
	}
	for _, id := range []string{"busy", "refused"} {
		if err := send(id, insert(id, nil)); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	// Flush waits for the held commit: a flush that must end first fails.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.Flush(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Flush with a held commit and an ended ctx = %v, want context.Canceled", err)
	}
	close(release)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	busy := tries["commit busy"]
	mu.Unlock()
	if busy != 3 {
		t.Fatalf("commit answered overloaded twice was called %d times, want 3", busy)
	}
	got := strings.Join(env.broker.answered(), ",")
	for _, want := range []string{"commit held", "rollback failed", "commit busy"} {
		if !strings.Contains(got, want) {
			t.Fatalf("end calls %s, want %s among them", got, want)
		}
	}
	e := receive(t, env.errs, "report of the refused commit")
	if e.ID != "refused" || !e.Commit || e.Attempts != 1 || !errors.Is(e, txmsg.ErrConflict) {
		t.Fatalf("reported %+v (%v), want the commit of refused, not retried, wrapping ErrConflict", e, e)
	}
	select {
	case e := <-env.errs:
		t.Fatalf("also reported %v", e)
	default:
	}
}

// TestBrokerProducerEndsSynchronouslyWhenFullOrClosed: with every background
// slot taken, or after Close, SendInTransaction makes the end call itself and
// returns its error; Close with an ended ctx abandons the calls in flight,
// reports them, and returns after they did; Close is idempotent.
func TestBrokerProducerEndsSynchronouslyWhenFullOrClosed(t *testing.T) {
	t.Parallel()
	env := newProducerEnv(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	env.broker.end = func(call string) (<-chan struct{}, int, string) {
		if call == "commit held" {
			return release, 0, ""
		}
		return nil, http.StatusConflict, CodeConflict
	}
	p := env.producer(t, WithProducerMaxPendingEnds(1))
	ctx := context.Background()
	send := func(id string) error {
		return p.SendInTransaction(ctx, txmsg.Message{ID: id, Topic: "orders", Value: []byte("v")}, insert(id, nil))
	}
	if err := send("held"); err != nil {
		t.Fatal(err)
	}
	if err := send("second"); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("end with every slot taken: %v, want the commit's conflict returned", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := p.Close(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close with a held commit and an ended ctx = %v, want context.Canceled", err)
	}
	select {
	case e := <-env.errs:
		if e.ID != "held" || !errors.Is(e, context.Canceled) {
			t.Fatalf("reported %+v (%v), want the abandoned commit of held", e, e)
		}
	default:
		t.Fatal("Close returned before reporting the commit it abandoned")
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := send("after-close"); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("end after Close: %v, want the commit's conflict returned", err)
	}
}

// TestBrokerProducerOptions: invalid end options are refused up front.
func TestBrokerProducerOptions(t *testing.T) {
	t.Parallel()
	c, err := NewClient("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	// Never connects: the options fail first.
	db, err := sql.Open("mysql", "root@tcp(127.0.0.1:1)/none")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for name, opt := range map[string]ProducerOption{
		"no pending ends": WithProducerMaxPendingEnds(0),
		"nil hook":        WithProducerOnEndError(nil),
	} {
		if _, err := NewProducer(c, "g", db, opt); err == nil {
			t.Errorf("%s: NewProducer accepted it", name)
		}
	}
}

// TestBrokerProducerPassesLedgerOptions: WithProducerLedgerOptions reaches
// the producer's ledger: WithoutBatchMarkers has a batch's markers written
// one by one (at several instants), where MariaDB would take them in one
// statement (one instant).
func TestBrokerProducerPassesLedgerOptions(t *testing.T) {
	t.Parallel()
	e := newProducerEnv(t)
	p := e.producer(t, WithProducerLedgerOptions(checkback.WithoutBatchMarkers()))
	var reqs []checkback.Request
	for i := range 16 {
		reqs = append(reqs, checkback.Request{ID: fmt.Sprintf("none-%02d", i)})
	}
	as, err := p.Ledger().CheckBatch(context.Background(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range as {
		if a != checkback.AnswerRollback {
			t.Fatalf("%s: %v, want rollback", reqs[i].ID, a)
		}
	}
	var stamps int
	if err := e.db.QueryRow(`SELECT COUNT(DISTINCT created_at) FROM txmsg_checkback_ledger`).Scan(&stamps); err != nil {
		t.Fatal(err)
	}
	if stamps < 2 {
		t.Fatalf("16 markers written at %d instant: one statement, although the ledger was told not to", stamps)
	}
}
