package consumer

import (
	"context"
	"sync"
)

// tracker computes one partition's low watermark: the offset of the last
// message in fetch order below which every fetched message is finished.
// Only that offset is committed, so a commit never runs ahead of
// processing, even when several lanes finish the partition's messages out
// of order. Fetch order, not offset arithmetic, decides: offsets have gaps
// (compaction, transaction markers).
//
// It also bounds the partition's in-flight work: the messages from the
// oldest unfinished one to the newest fetched, finished or not. While a key
// is stuck in retries, the messages fetched after it pile up here (even
// once finished, their offsets cannot be committed past it), so the fetch
// loop waits in waitRoom while they reach maxMsgs messages or maxBytes
// bytes.
type tracker struct {
	maxMsgs  int
	maxBytes int64
	// room receives a signal when the queue shrank, for waitRoom.
	room chan struct{}

	mu         sync.Mutex
	queue      []*entry // fetched, oldest first, from the first unfinished
	bytes      int64    // the sizes of queue's messages
	low        int64    // offset of the last message finished in order; -1 none
	lastCommit int64    // low at the last successful commit; -1 none
}

// entry is one fetched message; done is guarded by tracker.mu.
type entry struct {
	offset int64
	size   int64
	done   bool
}

func newTracker(maxMsgs int, maxBytes int64) *tracker {
	return &tracker{maxMsgs: maxMsgs, maxBytes: maxBytes, room: make(chan struct{}, 1), low: -1, lastCommit: -1}
}

// add records a fetched message of size bytes, in fetch order.
func (t *tracker) add(offset, size int64) *entry {
	e := &entry{offset: offset, size: size}
	t.mu.Lock()
	t.queue = append(t.queue, e)
	t.bytes += size
	t.mu.Unlock()
	return e
}

// finish marks e done and advances the low watermark over every finished
// message at the front of the queue.
func (t *tracker) finish(e *entry) {
	t.mu.Lock()
	e.done = true
	i := 0
	for i < len(t.queue) && t.queue[i].done {
		t.low = t.queue[i].offset
		t.bytes -= t.queue[i].size
		i++
	}
	clear(t.queue[:i])
	t.queue = t.queue[i:]
	t.mu.Unlock()
	if i > 0 {
		select {
		case t.room <- struct{}{}:
		default:
		}
	}
}

// full says whether the in-flight work is at its limit. One message is
// always let in, however big.
func (t *tracker) full() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.queue) > 0 && (len(t.queue) >= t.maxMsgs || t.bytes >= t.maxBytes)
}

// waitRoom returns once the in-flight work is below its limit, or ctx's
// error when ctx is done first.
func (t *tracker) waitRoom(ctx context.Context) error {
	for t.full() {
		select {
		case <-t.room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// pending returns the low watermark when it moved since the last commit.
func (t *tracker) pending() (low int64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.low, t.low >= 0 && t.low != t.lastCommit
}

// committed records that low (from pending) was committed.
func (t *tracker) committed(low int64) {
	t.mu.Lock()
	t.lastCommit = low
	t.mu.Unlock()
}
