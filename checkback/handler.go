package checkback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// maxRequestBytes bounds a check-back request body.
const maxRequestBytes = 1 << 20

// HandlerOption configures Handler.
type HandlerOption func(*handler)

// WithHandlerLogger logs checks that failed and requests refused (default:
// discarded).
func WithHandlerLogger(l *slog.Logger) HandlerOption {
	return func(h *handler) {
		if l != nil {
			h.log = l
		}
	}
}

// WithSecret sets the producer group's secret, which the broker signs every
// check-back with (the "secret" of the group's registration). Give the new
// and the old secret while a rotation rolls out: a request signed with
// either is accepted. Empty strings are ignored. Without a secret (or
// WithInsecureSkipVerify) the handler refuses every request.
func WithSecret(secrets ...string) HandlerOption {
	return func(h *handler) {
		for _, s := range secrets {
			if s != "" {
				h.secrets = append(h.secrets, s)
			}
		}
	}
}

// WithInsecureSkipVerify accepts unsigned requests: anyone who reaches the
// handler can then make it record a rollback for a transaction that has not
// started yet. For tests only.
func WithInsecureSkipVerify() HandlerOption { return func(h *handler) { h.insecure = true } }

type handler struct {
	checker  Checker
	log      *slog.Logger
	secrets  []string
	insecure bool
}

// Handler returns the http.Handler a producer mounts at its check-back URL.
// It accepts POST with a JSON Request signed as SignatureHeader describes
// with a secret given by WithSecret, asks checker with the request's context
// (canceled when the broker gives up), and answers 200 with {"state":…}. A
// request that is unsigned, wrongly signed or signed more than
// MaxSignatureAge away from now answers 401 and never reaches checker, so
// it records nothing. A checker error answers 200 {"state":"unknown"} and
// is logged; a malformed request answers 400. It is safe for concurrent use.
//
// It also takes batches, {"checks":[Request,…],"timeout_ms":n} of 1 to
// MaxBatch, and answers {"states":[…]}, one per check in order (checker's
// CheckBatch if it is a BatchChecker, else a Check per request); a check
// not answered within timeout_ms answers unknown, and the others are
// answered. Every answer carries BatchHeader, which tells the broker it may
// send them.
func Handler(checker Checker, opts ...HandlerOption) http.Handler {
	h := &handler{checker: checker, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(h)
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "checkback: POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, "checkback: body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "checkback: read body", http.StatusBadRequest)
		return
	}
	if !h.insecure {
		if len(h.secrets) == 0 {
			h.log.ErrorContext(r.Context(), "checkback: refused a check-back: the handler has no secret; pass checkback.WithSecret")
			http.Error(w, "checkback: unauthorized", http.StatusUnauthorized)
			return
		}
		if err := VerifySignature(r.Header.Get(SignatureHeader), body, time.Now(), h.secrets...); err != nil {
			h.log.WarnContext(r.Context(), "checkback: refused a check-back", slog.String("remote", r.RemoteAddr),
				slog.Any("error", err))
			http.Error(w, "checkback: unauthorized", http.StatusUnauthorized)
			return
		}
	}
	var req struct {
		Request
		batchBody
	}
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, "checkback: want a JSON body with an id, or with checks", http.StatusBadRequest)
		return
	}
	w.Header().Set(BatchHeader, strconv.Itoa(MaxBatch))
	if req.Checks == nil {
		if req.ID == "" {
			http.Error(w, "checkback: want a JSON body with an id", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(answerBody{State: h.check(r.Context(), req.Request)})
		return
	}
	if req.ID != "" || len(req.Checks) == 0 || len(req.Checks) > MaxBatch || req.TimeoutMS < 0 {
		http.Error(w, fmt.Sprintf("checkback: want checks of 1 to %d entries, no id beside them and a timeout_ms of 0 or more", MaxBatch),
			http.StatusBadRequest)
		return
	}
	for _, c := range req.Checks {
		if c.ID == "" {
			http.Error(w, "checkback: want an id in every check", http.StatusBadRequest)
			return
		}
	}
	ctx := r.Context()
	if req.TimeoutMS > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(min(req.TimeoutMS, maxBatchTimeout.Milliseconds()))*time.Millisecond)
		defer cancel()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(batchAnswerBody{States: h.checkBatch(ctx, req.Checks)})
}

// maxBatchTimeout caps a batch's timeout_ms (a longer wait is the
// request's own, which ends when the broker gives up).
const maxBatchTimeout = time.Hour

// checksAtOnce is how many checks of a batch a Checker without CheckBatch
// is asked at once: a signed batch, replayed within MaxSignatureAge, costs
// the producer no more than that many checks in flight.
const checksAtOnce = 8

// check asks the checker about req; a failure answers unknown, logged.
func (h *handler) check(ctx context.Context, req Request) Answer {
	a, err := h.checker.Check(ctx, req)
	if err != nil || a < AnswerUnknown || a > AnswerRollback {
		h.log.WarnContext(ctx, "checkback: check failed, answering unknown",
			slog.String("msg_id", req.ID), slog.Any("error", err))
		a = AnswerUnknown
	}
	return a
}

// checkBatch answers reqs: with one CheckBatch where the checker has it,
// else with a Check per request, checksAtOnce at a time (one slow check
// holds up few others; ctx ends them all by the broker's timeout).
func (h *handler) checkBatch(ctx context.Context, reqs []Request) []Answer {
	as := make([]Answer, len(reqs))
	if bc, ok := h.checker.(BatchChecker); ok {
		got, err := bc.CheckBatch(ctx, reqs)
		if err != nil || len(got) != len(reqs) {
			h.log.WarnContext(ctx, "checkback: batch check failed, answering unknown",
				slog.Int("checks", len(reqs)), slog.Any("error", err))
			got = nil
		}
		for i := range as {
			as[i] = AnswerUnknown
			if got != nil && got[i] >= AnswerUnknown && got[i] <= AnswerRollback {
				as[i] = got[i]
			}
		}
		return as
	}
	atOnce(len(reqs), func(i int) { as[i] = h.check(ctx, reqs[i]) })
	return as
}

// atOnce calls fn(0) … fn(n-1), checksAtOnce at a time, and returns when
// every call has.
func atOnce(n int, fn func(i int)) {
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range min(n, checksAtOnce) {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	wg.Wait()
}
