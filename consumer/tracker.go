package consumer

import (
	"sync"

	"github.com/segmentio/kafka-go"
)

// tracker computes each partition's low watermark: the offset of the last
// message in fetch order below which every fetched message is finished. Only
// that offset is committed, so a commit never runs ahead of processing, even
// when several workers finish a partition's messages out of order. Fetch
// order, not offset arithmetic, decides: offsets have gaps (compaction,
// transaction markers) and may rewind after a rebalance.
type tracker struct {
	mu    sync.Mutex
	parts map[tpKey]*partTrack
}

type tpKey struct {
	topic     string
	partition int
}

// entry is one fetched message; done is guarded by tracker.mu.
type entry struct {
	tp     tpKey
	offset int64
	done   bool
}

type partTrack struct {
	queue     []*entry // fetched, oldest first, up to the first unfinished
	low       int64    // offset of the last message finished in order; -1 none
	committed int64    // low at the last successful commit; -1 none
}

func newTracker() *tracker { return &tracker{parts: map[tpKey]*partTrack{}} }

// add records a fetched message, in fetch order.
func (t *tracker) add(tp tpKey, offset int64) *entry {
	e := &entry{tp: tp, offset: offset}
	t.mu.Lock()
	p := t.parts[tp]
	if p == nil {
		p = &partTrack{low: -1, committed: -1}
		t.parts[tp] = p
	}
	p.queue = append(p.queue, e)
	t.mu.Unlock()
	return e
}

// finish marks e done and advances its partition's low watermark over every
// finished message at the front of the queue.
func (t *tracker) finish(e *entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e.done = true
	p := t.parts[e.tp]
	i := 0
	for i < len(p.queue) && p.queue[i].done {
		p.low = p.queue[i].offset
		i++
	}
	clear(p.queue[:i])
	p.queue = p.queue[i:]
}

// pending returns one commit message per partition whose low watermark
// moved since its last commit. kafka-go commits Offset+1.
func (t *tracker) pending() []kafka.Message {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []kafka.Message
	for tp, p := range t.parts {
		if p.low >= 0 && p.low != p.committed {
			out = append(out, kafka.Message{Topic: tp.topic, Partition: tp.partition, Offset: p.low})
		}
	}
	return out
}

// committed records that msgs (from pending) were committed.
func (t *tracker) committed(msgs []kafka.Message) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range msgs {
		if p := t.parts[tpKey{m.Topic, m.Partition}]; p != nil {
			p.committed = m.Offset
		}
	}
}
