package checkback_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg/checkback"
)

// byPrefix answers a check by its id's first letter: c commit, r rollback,
// anything else an error (which the handler answers as unknown).
var byPrefix = checkback.CheckerFunc(func(_ context.Context, req checkback.Request) (checkback.Answer, error) {
	switch req.ID[0] {
	case 'c':
		return checkback.AnswerCommit, nil
	case 'r':
		return checkback.AnswerRollback, nil
	}
	return 0, errors.New("cannot tell")
})

func reqs(ids ...string) []checkback.Request {
	out := make([]checkback.Request, len(ids))
	for i, id := range ids {
		out[i] = checkback.Request{ID: id, ProducerGroup: "g", Topic: "t", CheckCount: 1}
	}
	return out
}

// TestCheckbackCallerLearnsBatchesFromTheAnswer: a Caller sends one check
// per request until a Handler's answer offers batches, then a batch is
// answered in order, a check the checker fails answering unknown.
func TestCheckbackCallerLearnsBatchesFromTheAnswer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(checkback.Handler(byPrefix, checkback.WithSecret(testSecret)))
	defer srv.Close()
	c := checkback.NewCaller(srv.Client())
	if n := c.BatchSize(srv.URL); n != 1 {
		t.Fatalf("batch size %d before any answer, want 1", n)
	}
	if a, err := c.Call(context.Background(), srv.URL, testSecret, reqs("c0")[0]); err != nil || a != checkback.AnswerCommit {
		t.Fatalf("call: %v, %v", a, err)
	}
	if n := c.BatchSize(srv.URL); n != checkback.MaxBatch {
		t.Fatalf("batch size %d after the handler's answer, want %d", n, checkback.MaxBatch)
	}
	as, err := c.CallBatch(context.Background(), srv.URL, testSecret, reqs("c1", "r1", "x1", "c2"))
	want := []checkback.Answer{checkback.AnswerCommit, checkback.AnswerRollback, checkback.AnswerUnknown, checkback.AnswerCommit}
	if err != nil || !slices.Equal(as, want) {
		t.Fatalf("batch answered %v, %v; want %v", as, err, want)
	}
}

// TestCheckbackCallerKeepsOneCheckPerRequestForOldProducers: a producer
// whose answers carry no BatchHeader (one that speaks only the one-check
// protocol) is never offered a batch; one that stops taking them is asked
// one by one again.
func TestCheckbackCallerKeepsOneCheckPerRequestForOldProducers(t *testing.T) {
	t.Parallel()
	var offer atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if offer.Load() {
			w.Header().Set(checkback.BatchHeader, "8")
		}
		if strings.Contains(string(body), `"checks"`) {
			http.Error(w, "want an id", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(`{"state":"commit"}`))
	}))
	defer srv.Close()
	c := checkback.NewCaller(srv.Client())
	ctx := context.Background()
	if _, err := c.Call(ctx, srv.URL, "", reqs("c0")[0]); err != nil {
		t.Fatal(err)
	}
	if n := c.BatchSize(srv.URL); n != 1 {
		t.Fatalf("batch size %d after an answer without %s, want 1", n, checkback.BatchHeader)
	}
	offer.Store(true)
	if _, err := c.Call(ctx, srv.URL, "", reqs("c0")[0]); err != nil {
		t.Fatal(err)
	}
	if n := c.BatchSize(srv.URL); n != 8 {
		t.Fatalf("batch size %d after an answer offering 8, want 8", n)
	}
	if _, err := c.CallBatch(ctx, srv.URL, "", reqs("c1", "c2")); !errors.Is(err, checkback.ErrBatchRefused) {
		t.Fatalf("batch to a producer answering 400: %v, want ErrBatchRefused", err)
	}
	if n := c.BatchSize(srv.URL); n != 1 {
		t.Fatalf("batch size %d after a refused batch, want 1", n)
	}
}

// TestCheckbackCallBatchRejectsBadAnswers: an answer that does not give
// one valid state per check, in a {"states":[…]} body, is no answer.
func TestCheckbackCallBatchRejectsBadAnswers(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"state":"commit"}`,
		`{"states":["commit"]}`,
		`{"states":["commit","commit","commit"]}`,
		`{"states":["commit","maybe"]}`,
		`{"states":["commit",null]}`,
		`<html>`,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(body))
		}))
		as, err := checkback.NewCaller(srv.Client()).CallBatch(context.Background(), srv.URL, "", reqs("c1", "c2"))
		srv.Close()
		if !errors.Is(err, checkback.ErrBadAnswer) || as != nil {
			t.Errorf("answer %s: %v, %v; want ErrBadAnswer", body, as, err)
		}
	}
}

// TestCheckbackCallBatchSplitsWhatTheHandlerWouldRefuse: a batch whose
// body would pass the handler's limit goes as several requests, each
// within it, and every check is answered.
func TestCheckbackCallBatchSplitsWhatTheHandlerWouldRefuse(t *testing.T) {
	t.Parallel()
	var posts atomic.Int32
	h := checkback.Handler(byPrefix, checkback.WithInsecureSkipVerify())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	batch := reqs("c1", "r2", "c3", "r4")
	for i := range batch {
		batch[i].Headers = map[string]string{"big": strings.Repeat("x", 300<<10)}
	}
	as, err := checkback.NewCaller(srv.Client()).CallBatch(context.Background(), srv.URL, "", batch)
	want := []checkback.Answer{checkback.AnswerCommit, checkback.AnswerRollback, checkback.AnswerCommit, checkback.AnswerRollback}
	if err != nil || !slices.Equal(as, want) {
		t.Fatalf("batch of 1.2 MB answered %v, %v; want %v", as, err, want)
	}
	if n := posts.Load(); n < 2 {
		t.Fatalf("%d requests, want the batch split", n)
	}
}

// TestCheckbackCallBatchKeepsTheAnswersBeforeAFailedPart: a split batch
// whose second request fails returns the first request's answers in a
// PartialError, wrapping why the rest have none.
func TestCheckbackCallBatchKeepsTheAnswersBeforeAFailedPart(t *testing.T) {
	t.Parallel()
	var posts atomic.Int32
	h := checkback.Handler(byPrefix, checkback.WithInsecureSkipVerify())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if posts.Add(1) > 1 {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	batch := reqs("c1", "r2", "c3", "r4")
	for i := range batch {
		batch[i].Headers = map[string]string{"big": strings.Repeat("x", 300<<10)}
	}
	_, err := checkback.NewCaller(srv.Client()).CallBatch(context.Background(), srv.URL, "", batch)
	var pe *checkback.PartialError
	if !errors.As(err, &pe) || !slices.Equal(pe.Answers, []checkback.Answer{checkback.AnswerCommit, checkback.AnswerRollback}) {
		t.Fatalf("got %v, want the first two answers in a PartialError", err)
	}
	if se := (*checkback.StatusError)(nil); !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable {
		t.Fatalf("%v does not wrap the failed request's status", err)
	}
}

// TestCheckbackHandlerAnswersABatchInOrder: the body a Caller sends, seen
// by a Handler over a checker without CheckBatch, is answered check by
// check in order, with BatchHeader.
func TestCheckbackHandlerAnswersABatchInOrder(t *testing.T) {
	t.Parallel()
	body := `{"checks":[{"id":"r1"},{"id":"c1"},{"id":"x"},{"id":"r1"}]}`
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/check", strings.NewReader(body))
	req.Header.Set(checkback.SignatureHeader, checkback.Sign(testSecret, time.Now(), []byte(body)))
	checkback.Handler(byPrefix, checkback.WithSecret(testSecret)).ServeHTTP(rec, req)
	var got struct {
		States []string `json:"states"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &got) != nil {
		t.Fatalf("status %d, body %s", rec.Code, rec.Body)
	}
	if fmt.Sprint(got.States) != "[rollback commit unknown rollback]" {
		t.Fatalf("states %v", got.States)
	}
	if h := rec.Header().Get(checkback.BatchHeader); h != fmt.Sprint(checkback.MaxBatch) {
		t.Fatalf("%s: %q, want %d", checkback.BatchHeader, h, checkback.MaxBatch)
	}
}

// TestCheckbackBatchAnswersTheOthersWhileOneWaits: in a batch, a check
// that waits on a local transaction still open answers unknown by the
// batch's timeout, and the checks beside it are answered; the transaction
// then commits as it would have.
func TestCheckbackBatchAnswersTheOthersWhileOneWaits(t *testing.T) {
	t.Parallel()
	db, l := newLedger(t)
	ctx := context.Background()
	done := recordCommitted(t, db, l, "done")
	tx := openRecorded(t, db, l, "open")
	srv := httptest.NewServer(checkback.Handler(l, checkback.WithSecret(testSecret)))
	defer srv.Close()
	// timeout_ms is three quarters of this (3.75s): the others of the batch
	// have that long to be answered and the answer 1.25s to arrive, room a
	// loaded machine needs.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	as, err := checkback.NewCaller(srv.Client()).CallBatch(cctx, srv.URL, testSecret, reqs(done, "open", "none"))
	want := []checkback.Answer{checkback.AnswerCommit, checkback.AnswerUnknown, checkback.AnswerRollback}
	if err != nil || !slices.Equal(as, want) {
		t.Fatalf("batch beside an open transaction answered %v, %v; want %v", as, err, want)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("the open transaction after the batch: %v", err)
	}
	if a, err := l.Check(ctx, checkback.Request{ID: "open"}); err != nil || a != checkback.AnswerCommit {
		t.Fatalf("check after the commit: %v, %v; want commit", a, err)
	}
}

// TestCheckbackHandlerTakesAnyBatchTimeout: a timeout_ms too large for a
// time.Duration waits as a long one, not as one already over.
func TestCheckbackHandlerTakesAnyBatchTimeout(t *testing.T) {
	t.Parallel()
	body := `{"checks":[{"id":"c1"}],"timeout_ms":9223372036854775807}`
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/check", strings.NewReader(body))
	req.Header.Set(checkback.SignatureHeader, checkback.Sign(testSecret, time.Now(), []byte(body)))
	waits := checkback.CheckerFunc(func(ctx context.Context, req checkback.Request) (checkback.Answer, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return checkback.AnswerCommit, nil
	})
	checkback.Handler(waits, checkback.WithSecret(testSecret)).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"states":["commit"]`) {
		t.Fatalf("status %d, body %s; want the check answered", rec.Code, rec.Body)
	}
}

// TestCheckbackCallerKeepsBatchesThroughAPassingFailure: a batch answered
// 503 is refused (its checks are asked one by one) but the producer keeps
// its batches; one answered 400 (it does not read batches) loses them.
func TestCheckbackCallerKeepsBatchesThroughAPassingFailure(t *testing.T) {
	t.Parallel()
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(checkback.BatchHeader, "8")
		if s := int(status.Load()); s != 0 {
			http.Error(w, "no", s)
			return
		}
		_, _ = w.Write([]byte(`{"state":"commit"}`))
	}))
	defer srv.Close()
	c := checkback.NewCaller(srv.Client())
	ctx := context.Background()
	if _, err := c.Call(ctx, srv.URL, "", reqs("c0")[0]); err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusTooManyRequests} {
		status.Store(int32(s))
		if _, err := c.CallBatch(ctx, srv.URL, "", reqs("c1", "c2")); !errors.Is(err, checkback.ErrBatchRefused) {
			t.Fatalf("batch answered %d: %v, want ErrBatchRefused", s, err)
		}
		if n := c.BatchSize(srv.URL); n != 8 {
			t.Fatalf("batch size %d after a batch answered %d, want 8 still", n, s)
		}
	}
	status.Store(http.StatusBadRequest)
	if _, err := c.CallBatch(ctx, srv.URL, "", reqs("c1", "c2")); !errors.Is(err, checkback.ErrBatchRefused) {
		t.Fatalf("batch answered 400: %v, want ErrBatchRefused", err)
	}
	if n := c.BatchSize(srv.URL); n != 1 {
		t.Fatalf("batch size %d after a batch answered 400, want 1", n)
	}
}
