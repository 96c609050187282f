package halfmsg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Ending a message: once its local transaction has committed (or failed),
// the Producer tells the broker Commit (or Rollback). The decision is
// already durable in the ledger, so by default the call is made in the
// background, as RocketMQ sends endTransaction one-way: a call that is lost
// or fails is resolved by the broker's check-back, and delivery then waits
// for it.
const (
	// DefaultMaxPendingEnds is the default of WithProducerMaxPendingEnds.
	DefaultMaxPendingEnds = 64
	// endAttempts bounds the calls of one background end (the first and
	// its retries); endBackoff is the wait before the first retry, doubled
	// for each next one (with jitter): 4 attempts retry for at most 0.35 s
	// besides the calls themselves, and check-back covers the rest.
	endAttempts = 4
	endBackoff  = 50 * time.Millisecond
	// endCallTimeout bounds each end call made in the background, and the
	// rollback made after a failed local transaction even when its ctx has
	// ended.
	endCallTimeout = 5 * time.Second
)

// EndError reports a commit or rollback call that the Producer made in the
// background and that failed, after its retries, or that Close abandoned.
// The local transaction's outcome is durable in the ledger: the broker's
// check-back resolves the message, and its delivery waits for that.
type EndError struct {
	// ID is the message's id.
	ID string
	// Commit is true for a commit call, false for a rollback.
	Commit bool
	// Attempts is the number of calls made.
	Attempts int
	// Err is the last call's error.
	Err error
}

// Error implements error.
func (e *EndError) Error() string {
	if e.Commit {
		return fmt.Sprintf("halfmsg: producer: commit message %s (local transaction committed; check-back will deliver it) after %d attempts: %v",
			e.ID, e.Attempts, e.Err)
	}
	return fmt.Sprintf("halfmsg: producer: roll back message %s (check-back will) after %d attempts: %v", e.ID, e.Attempts, e.Err)
}

// Unwrap returns the last call's error.
func (e *EndError) Unwrap() error { return e.Err }

// logEndError is the default end-error hook: an error that has no caller to
// be returned to must not vanish by default.
func logEndError(e *EndError) {
	action := "rollback"
	if e.Commit {
		action = "commit"
	}
	slog.Default().Warn("halfmsg: background end call failed; check-back will resolve the message",
		"msg_id", e.ID, "action", action, "attempt", e.Attempts, "error", e.Err)
}

// endSender makes end calls in the background: at most max at a time, each
// in a goroutine it owns; start refuses more, and the caller then makes the
// call itself. Lock order: mu only, never held across a call or a hook.
type endSender struct {
	call    func(ctx context.Context, id string, commit bool) error
	onError func(*EndError)
	max     int
	// ctx is the parent of every background call; Close cancels it when
	// its own ctx ends first.
	ctx    context.Context
	cancel context.CancelFunc

	wg      sync.WaitGroup
	mu      sync.Mutex
	closed  bool
	pending map[*pendingEnd]struct{}
}

// pendingEnd is one background end call; done is closed when it returned.
type pendingEnd struct{ done chan struct{} }

func newEndSender(max int, onError func(*EndError), call func(ctx context.Context, id string, commit bool) error) *endSender {
	ctx, cancel := context.WithCancel(context.Background())
	return &endSender{call: call, onError: onError, max: max, ctx: ctx, cancel: cancel,
		pending: make(map[*pendingEnd]struct{})}
}

// start makes the end call of id in the background and reports whether it
// did: not after close, nor while max calls are in flight. The call keeps
// ctx's values, not its cancellation: ctx usually ends as soon as
// SendInTransaction returns.
func (s *endSender) start(ctx context.Context, id string, commit bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.pending) >= s.max {
		return false
	}
	pe := &pendingEnd{done: make(chan struct{})}
	s.pending[pe] = struct{}{}
	s.wg.Go(func() {
		defer func() {
			s.mu.Lock()
			delete(s.pending, pe)
			s.mu.Unlock()
			close(pe.done)
		}()
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		stop := context.AfterFunc(s.ctx, cancel)
		defer stop()
		if err := s.retry(cctx, id, commit); err != nil {
			s.onError(err)
		}
	})
	return true
}

// retry makes the call until it succeeds, fails for good, or endAttempts
// calls failed, backing off between calls, and returns the last failure.
func (s *endSender) retry(ctx context.Context, id string, commit bool) *EndError {
	wait := endBackoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, endCallTimeout)
		err := s.call(actx, id, commit)
		cancel()
		if err == nil {
			return nil
		}
		if attempt == endAttempts || !transient(err) || ctx.Err() != nil {
			return &EndError{ID: id, Commit: commit, Attempts: attempt, Err: err}
		}
		// Full jitter over the upper half: producers that failed together
		// do not retry together.
		t := time.NewTimer(wait/2 + rand.N(wait/2))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return &EndError{ID: id, Commit: commit, Attempts: attempt, Err: errors.Join(err, ctx.Err())}
		}
		wait *= 2
	}
}

// transient reports whether an end call that failed with err may succeed if
// made again: the broker was overloaded or failed (HTTP 429 and 5xx), or the
// call never got an answer (a network error or a timeout). An answer such
// as conflict or not found will not change.
func transient(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status == http.StatusTooManyRequests || ae.Status >= 500
	}
	return true
}

// flush waits until the calls in flight when it was called have returned,
// or ctx ends.
func (s *endSender) flush(ctx context.Context) error {
	s.mu.Lock()
	dones := make([]chan struct{}, 0, len(s.pending))
	for pe := range s.pending {
		dones = append(dones, pe.done)
	}
	s.mu.Unlock()
	for i, done := range dones {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("halfmsg: producer: %d end calls still in flight: %w", len(dones)-i, ctx.Err())
		}
	}
	return nil
}

// close refuses new background calls, waits for those in flight until ctx
// ends, then cancels the rest (each reported as an EndError) and waits
// until every goroutine has returned.
func (s *endSender) close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.flush(ctx)
	s.cancel()
	s.wg.Wait()
	return err
}
