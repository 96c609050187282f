package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// batchTimeout bounds one batch's database work; a batch runs apart from its
// callers' contexts, since one caller giving up must not fail the others.
const batchTimeout = 30 * time.Second

// call is what every batched call carries: its outcome, set once.
type call struct {
	done chan struct{} // closed once err (and the call's own results) are set
	err  error
}

func (c *call) base() *call { return c }

// batcher is group commit: calls made at the same time are queued, and one
// writer goroutine runs whatever is queued as one batch (one transaction,
// one durable commit for all), then the calls that queued meanwhile, and so
// on. Nothing waits for a batch to fill: a lone call runs at once, so a
// batch is as big as the load makes it. The writer exists only while calls
// are queued (it returns when the queue is empty, and the next call starts
// another), and the WaitGroup owns it. Safe for concurrent use.
type batcher[T interface{ base() *call }] struct {
	// run does one batch and returns one error per call, in order; it sets
	// the calls' own results when their error is nil.
	run     func(ctx context.Context, calls []T) []error
	max     int // most calls in one batch
	writers int // most batches running at once

	mu      sync.Mutex
	queue   []T
	running int
	closed  bool // set by close: calls fail, no writer starts
	wg      sync.WaitGroup
}

// errClosed fails a call made after the broker began to shut down.
var errClosed = errors.New("broker: shutting down")

// close fails the calls made from now on and returns once no batch runs.
func (b *batcher[T]) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
}

// do queues c and waits for its outcome. When ctx ends before c's batch
// starts, c is taken out of the queue and nothing is done; when it ends
// while c's batch runs, do returns ctx's error and c's work may or may not
// have been done, as with any statement cancelled in flight.
func (b *batcher[T]) do(ctx context.Context, c T) error { return b.doAll(ctx, []T{c})[0] }

// doAll queues cs together, so that they go in the same batch when they fit
// (a batch request's messages cost one batch, as concurrent calls do), and
// returns each one's outcome, as do.
func (b *batcher[T]) doAll(ctx context.Context, cs []T) []error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		errs := make([]error, len(cs))
		for i := range errs {
			errs[i] = errClosed
		}
		return errs
	}
	for _, c := range cs {
		c.base().done = make(chan struct{})
	}
	b.queue = append(b.queue, cs...)
	if b.running < b.writers {
		b.running++
		b.wg.Go(b.loop)
	}
	b.mu.Unlock()
	errs := make([]error, len(cs))
	for i, c := range cs {
		select {
		case <-c.base().done:
			errs[i] = c.base().err
			continue
		case <-ctx.Done():
		}
		b.withdraw(ctx, cs[i:], errs[i:])
		break
	}
	return errs
}

// withdraw takes the calls of cs that are still queued out of the queue
// after ctx ended, and sets each call's error in errs: its outcome if its
// batch is over, else ctx's error.
func (b *batcher[T]) withdraw(ctx context.Context, cs []T, errs []error) {
	mine := make(map[*call]bool, len(cs))
	for _, c := range cs {
		mine[c.base()] = true
	}
	queued := map[*call]bool{}
	b.mu.Lock()
	b.queue = slices.DeleteFunc(b.queue, func(q T) bool {
		queued[q.base()] = mine[q.base()]
		return mine[q.base()]
	})
	b.mu.Unlock()
	for i, c := range cs {
		cl := c.base()
		select {
		case <-cl.done:
			errs[i] = cl.err
			continue
		default:
		}
		if queued[cl] {
			errs[i] = ctx.Err()
		} else {
			errs[i] = fmt.Errorf("%w (the batch holding the call was running)", ctx.Err())
		}
	}
}

// loop runs batches until the queue is empty.
func (b *batcher[T]) loop() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.max)
		if n == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		batch := slices.Clone(b.queue[:n])
		b.queue = slices.Delete(b.queue, 0, n)
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
		errs := b.run(ctx, batch)
		cancel()
		for i, c := range batch {
			c.base().err = errs[i]
			close(c.base().done)
		}
	}
}
