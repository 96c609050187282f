package halfmsg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Coalescing: a Client's concurrent prepares (and, apart, its concurrent
// commits and rollbacks) share batch requests. A call goes at once, alone
// on the single endpoint, when no request of its kind is in flight;
// otherwise it queues, and the next request to leave carries everything
// queued (up to MaxBatchItems messages and maxBatchBytes). Another request
// may leave beside those in flight, up to maxInFlight, once the latest of
// them has been out spareAfter. So a lone call waits for nothing, under load
// one request's HTTP, JSON, authentication and broker commit serve many
// messages, and a request that hangs holds the others back spareAfter at
// most.
const (
	// DefaultMaxBatchRequests is the default of WithMaxBatchRequests.
	DefaultMaxBatchRequests = 2
	// maxBatchBytes bounds a batch request's messages, half the broker's
	// default body limit; a message bigger than it goes alone.
	maxBatchBytes = 1 << 20
	// maxQueued bounds the calls queued for batch requests of one kind; a
	// call finding it full waits for room (or its ctx).
	maxQueued = 4 * MaxBatchItems
	// spareAfter is how long the latest request of a kind in flight must
	// have been out before another leaves beside it. A broker answers a
	// batch within a few milliseconds under load (one group commit), so the
	// calls queued meanwhile wait for it and make one larger batch: at 32
	// producers 3.21 broker commits per half message, as with one request
	// in flight at most, against 3.32 with a second leaving at once.
	spareAfter = 20 * time.Millisecond
)

// errAlone: the batch endpoint could not take the call (a broker without
// it, a body over the broker's limit); the caller sends it alone.
var errAlone = errors.New("halfmsg: send alone")

// batchCall is one call waiting for a batch request.
type batchCall struct {
	raw    []byte                                        // its JSON in the batch body
	single func(ctx context.Context) (ItemResult, error) // the call on the single endpoint
	done   chan struct{}                                 // closed once res and err are set
	res    ItemResult
	err    error
	req    *batchRequest // the request carrying it, once it left the queue
}

// batchRequest is one batch request in flight: cancelled once none of its
// callers waits for it any more.
type batchRequest struct {
	cancel  context.CancelFunc
	waiting int
}

// coalescer sends the calls of one kind (see Coalescing above). Lock order:
// mu only, never held across a request. The goroutines sending batch
// requests exist only while calls are queued; wg owns them.
type coalescer struct {
	c           *Client
	path        string // the batch endpoint
	maxInFlight int
	spare       time.Duration // spareAfter, but in tests
	slots       chan struct{} // one per queued call

	mu       sync.Mutex
	queue    []*batchCall
	inFlight int
	lastLeft time.Time   // when the latest request left
	timer    *time.Timer // set while a spare request waits for spare
	wg       sync.WaitGroup
}

func newCoalescer(c *Client, path string, maxInFlight int) *coalescer {
	return &coalescer{c: c, path: path, maxInFlight: maxInFlight, spare: spareAfter, slots: make(chan struct{}, maxQueued)}
}

// do sends bc, at once or in a batch request, and returns its result. When
// ctx ends while bc is queued, bc is taken out of the queue and never sent;
// when it ends while bc's request is in flight, do returns at once, and the
// broker may or may not act on bc (the request goes on for the other
// messages in it, and is cancelled when none of their callers waits any
// more), as with any call cancelled in flight.
func (q *coalescer) do(ctx context.Context, bc *batchCall) (ItemResult, error) {
	if !q.c.batching() || len(bc.raw) > maxBatchBytes {
		return bc.single(ctx)
	}
	q.mu.Lock()
	if q.inFlight == 0 && len(q.queue) == 0 {
		q.inFlight++
		q.lastLeft = time.Now()
		q.mu.Unlock()
		res, err := bc.single(ctx)
		q.release()
		return res, err
	}
	q.mu.Unlock()
	select {
	case q.slots <- struct{}{}:
	case <-ctx.Done():
		return ItemResult{}, fmt.Errorf("halfmsg: %s: not sent, the queue was full: %w", q.path, ctx.Err())
	}
	bc.done = make(chan struct{})
	q.mu.Lock()
	q.queue = append(q.queue, bc)
	q.startLocked()
	q.mu.Unlock()
	select {
	case <-bc.done:
		return q.result(ctx, bc)
	case <-ctx.Done():
	}
	q.mu.Lock()
	if i := slices.Index(q.queue, bc); i >= 0 {
		q.queue = slices.Delete(q.queue, i, i+1)
		q.mu.Unlock()
		<-q.slots
		return ItemResult{}, fmt.Errorf("halfmsg: %s: not sent: %w", q.path, ctx.Err())
	}
	select {
	case <-bc.done:
		q.mu.Unlock()
		return q.result(ctx, bc)
	default:
	}
	if r := bc.req; r != nil {
		if r.waiting--; r.waiting == 0 {
			r.cancel()
		}
	}
	q.mu.Unlock()
	return ItemResult{}, fmt.Errorf("halfmsg: %s: %w (the batch request holding the call was in flight: the broker may have acted on it)",
		q.path, ctx.Err())
}

// result is bc's outcome, once done: sent alone when its batch could not
// take it.
func (q *coalescer) result(ctx context.Context, bc *batchCall) (ItemResult, error) {
	if errors.Is(bc.err, errAlone) {
		return bc.single(ctx)
	}
	return bc.res, bc.err
}

// release ends a request made outside loop: a loop takes its place when
// calls queued meanwhile.
func (q *coalescer) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) > 0 {
		q.wg.Go(q.loop)
		return
	}
	q.inFlight--
}

// startLocked starts a request for the queued calls when none is in
// flight, or beside those in flight when fewer than maxInFlight are and
// the latest has been out spare; otherwise it looks again once it will
// have been (the requests in flight may take the calls first). q.mu is held.
func (q *coalescer) startLocked() {
	if len(q.queue) == 0 || q.inFlight >= q.maxInFlight || q.timer != nil {
		return
	}
	if wait := q.spare - time.Since(q.lastLeft); q.inFlight > 0 && wait > 0 {
		q.timer = time.AfterFunc(wait, func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			q.timer = nil
			q.startLocked()
		})
		return
	}
	q.inFlight++
	q.wg.Go(q.loop)
}

// loop sends batch requests until the queue is empty.
func (q *coalescer) loop() {
	for {
		q.mu.Lock()
		n, size := 0, 0
		for n < len(q.queue) && n < MaxBatchItems && (n == 0 || size+len(q.queue[n].raw) <= maxBatchBytes) {
			size += len(q.queue[n].raw) + 1
			n++
		}
		if n == 0 {
			q.inFlight--
			q.mu.Unlock()
			return
		}
		batch := slices.Clone(q.queue[:n])
		q.queue = slices.Delete(q.queue, 0, n)
		q.lastLeft = time.Now()
		// More queued than one request takes: perhaps another beside it.
		q.startLocked()
		ctx, cancel := context.WithCancel(context.Background())
		r := &batchRequest{cancel: cancel, waiting: n}
		for _, bc := range batch {
			bc.req = r
		}
		q.mu.Unlock()
		for range n {
			<-q.slots
		}
		res, errs := q.send(ctx, batch)
		cancel()
		for i, bc := range batch {
			bc.res, bc.err = res[i], errs[i]
			close(bc.done)
		}
	}
}

// send makes one batch request of calls and returns each one's result.
func (q *coalescer) send(ctx context.Context, calls []*batchCall) ([]ItemResult, []error) {
	res, errs := make([]ItemResult, len(calls)), make([]error, len(calls))
	var body bytes.Buffer
	body.WriteString(`{"messages":[`)
	for i, bc := range calls {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(bc.raw)
	}
	body.WriteString(`]}`)
	var out BatchBody
	err := q.c.doRaw(ctx, http.MethodPost, q.path, body.Bytes(), &out)
	var ae *APIError
	switch {
	case errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed):
		// A broker without batch endpoints: later calls go alone for a
		// while (see Client).
		q.c.batchOffUntil.Store(time.Now().Add(q.c.batchRetry).UnixNano())
		err = errAlone
	case errors.As(err, &ae) && ae.Status == http.StatusRequestEntityTooLarge:
		err = errAlone
	case err == nil && len(out.Results) != len(calls):
		err = fmt.Errorf("halfmsg: POST %s: the answer has %d results for %d messages", q.path, len(out.Results), len(calls))
	}
	for i := range calls {
		switch {
		case err != nil:
			errs[i] = err
		case out.Results[i].Status/100 != 2 || out.Results[i].Error != nil:
			r := out.Results[i]
			var d ErrorDetail
			if r.Error != nil {
				d = *r.Error
			}
			if d.Code == "" {
				d.Code = CodeInternal
			}
			errs[i] = &APIError{Status: r.Status, Code: d.Code, Message: d.Message}
		default:
			res[i] = out.Results[i]
		}
	}
	return res, errs
}

// encodeItem is the JSON of one message of a batch body.
func encodeItem(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("halfmsg: encode: %w", err)
	}
	return b, nil
}
