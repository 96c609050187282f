package broker

import (
	"context"
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
	wg      sync.WaitGroup
}

// do queues c and waits for its outcome. When ctx ends before c's batch
// starts, c is taken out of the queue and nothing is done; when it ends
// while c's batch runs, do returns ctx's error and c's work may or may not
// have been done, as with any statement cancelled in flight.
func (b *batcher[T]) do(ctx context.Context, c T) error {
	cl := c.base()
	cl.done = make(chan struct{})
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if b.running < b.writers {
		b.running++
		b.wg.Go(b.loop)
	}
	b.mu.Unlock()
	select {
	case <-cl.done:
		return cl.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	queued := false
	b.queue = slices.DeleteFunc(b.queue, func(q T) bool {
		if q.base() == cl {
			queued = true
		}
		return q.base() == cl
	})
	b.mu.Unlock()
	if queued {
		return ctx.Err()
	}
	return fmt.Errorf("%w (the batch holding the call was running)", ctx.Err())
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
