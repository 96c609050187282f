package relay

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"time"
)

// The change probe of a Handover source reads the rows that arrive whole
// and hands each shard's to its worker, which publishes them without
// reading its shard: at 1,000 msg/s from 32 producers a shard's read
// carried 1.2 rows, and those reads (830 a second) were the largest share of
// the relay's statements, beside the probe's 500.
//
// A worker may publish handed rows in place of a read only while it knows
// that they and what it read itself are every row of its shard committed
// since: it read its shard completely (polledAt), and has since taken every
// handoff, delivering all of it; and every probe since polledAt listed every
// seq that could still commit (the probe's chain, see tail.lost): a
// transaction that holds its seq past the gap timeout drops out of the
// probe's sight, and its row, committed later, would be found only by a
// read, after newer rows of its key went out. A probe lists each seq once,
// so the handoffs alone never repeat a row; but a row may be both read by
// the worker and listed by a probe (probes and reads run side by side), and
// a read that returned a row may come before the probe that lists it. So a
// worker remembers the seqs its reads returned until no probe can list them
// any more (see polled), and drops them from what it is handed.

// handoff is one probe's rows of one shard.
type handoff struct {
	rows []Row
	// probe numbers the probe (see Engine.probesSent).
	probe int64
	// chain is when the run of probes the worker may rely on began: every
	// probe from it on, this one included, saw every seq that could still
	// commit.
	chain time.Duration
}

// inbox holds the handoffs of one shard until its worker's next round. It
// takes them only while a worker of this engine owns the shard, and at most
// limit's rows and bytes: past them it drops them all and the worker reads
// its shard itself.
type inbox struct {
	mu       sync.Mutex
	open     bool
	hs       []handoff
	rows     int
	bytes    int64
	overflow bool
}

// isOpen says whether a worker of this engine owns the shard.
func (b *inbox) isOpen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open
}

// reset empties the inbox, and opens it for a worker or closes it.
func (b *inbox) reset(open bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open, b.hs, b.rows, b.bytes, b.overflow = open, nil, 0, 0, false
}

// put adds h, unless the inbox is closed, or would hold more than limit.
func (b *inbox) put(h handoff, limit Limit) {
	var size int64
	for _, r := range h.rows {
		size += int64(len(r.Key) + len(r.Value))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.open || b.overflow:
	case b.rows+len(h.rows) > limit.Rows || b.bytes+size > limit.Bytes:
		b.hs, b.rows, b.bytes, b.overflow = nil, 0, 0, true
	default:
		b.hs = append(b.hs, h)
		b.rows += len(h.rows)
		b.bytes += size
	}
}

// mustRead tells the worker to read its shard itself: rows arrived that
// were not handed over.
func (b *inbox) mustRead() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		b.hs, b.rows, b.bytes, b.overflow = nil, 0, 0, true
	}
}

// take empties the inbox and returns what it held, and whether it dropped
// any handoff since the last take.
func (b *inbox) take() ([]handoff, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	hs, overflow := b.hs, b.overflow
	b.hs, b.rows, b.bytes, b.overflow = nil, 0, 0, false
	return hs, overflow
}

// inboxLimit bounds what one shard's inbox holds: a round's rows, and a
// share of a round's bytes, so that all of them together hold no more than
// one round may read.
func (e *Engine) inboxLimit() Limit {
	return Limit{Rows: e.cfg.BatchSize, Bytes: max(e.cfg.BatchBytes/int64(e.cfg.Shards), 64<<10)}
}

// ownShards returns the shards of source s that workers of this engine own
// now, nil when they own them all: the probe reads only their rows whole.
func (e *Engine) ownShards(s string) []int {
	ins := e.inboxes[s]
	own := []int{}
	for i := range ins {
		if ins[i].isOpen() {
			own = append(own, i)
		}
	}
	if len(own) == len(ins) {
		return nil
	}
	return own
}

// handOver puts each shard's rows of probe n in its inbox (rows in seq
// order, shards beyond Config.Shards left out), or, when the probe may have
// missed rows (handing is false), tells the shards of its arrivals to read
// themselves. Only the shards in whole (all when nil) were read whole: a
// worker that claimed another since reads its rows itself.
func (c *coordinator) handOver(s Source, as []Arrival, rows []Row, whole []int, n int64, handing bool, chain time.Duration) {
	e := c.e
	ins := e.inboxes[s.Name()]
	if !handing {
		for _, a := range as {
			if a.Shard >= 0 && a.Shard < e.cfg.Shards {
				ins[a.Shard].mustRead()
			}
		}
		return
	}
	byShard := map[int][]Row{}
	for _, r := range rows {
		switch {
		case r.Shard < 0 || r.Shard >= e.cfg.Shards:
		case whole != nil && !slices.Contains(whole, r.Shard):
			ins[r.Shard].mustRead()
		default:
			byShard[r.Shard] = append(byShard[r.Shard], r)
		}
	}
	limit := e.inboxLimit()
	for shard, rs := range byShard {
		ins[shard].put(handoff{rows: rs, probe: n, chain: chain}, limit)
	}
}

// polled remembers the seqs w's reads returned while a probe may still list
// them: a read that ended before probe n+1 was sent saw only rows that
// commit before that probe's snapshot, which it or an earlier probe lists.
// Only w's goroutine uses it.
type polled struct {
	// seqs maps a seq read to the last probe sent when the read ended.
	seqs map[int64]int64
	// blind is the last such probe of seqs forgotten early (too many to
	// keep): handoffs up to the next probe may repeat them.
	blind int64
}

// maxPolled bounds the seqs a worker remembers (a few reads' worth: the
// next probes let it forget them, unless probes stall); past it, it forgets
// them and reads its shard until the probes that could list them are past.
const maxPolled = 8192

// read records the seqs of rows, read when probe n was the last one sent.
func (p *polled) read(rows []Row, n int64) {
	if p.seqs == nil {
		p.seqs = map[int64]int64{}
	}
	if len(p.seqs)+len(rows) > maxPolled {
		for _, m := range p.seqs {
			p.blind = max(p.blind, m)
		}
		clear(p.seqs)
	}
	for _, r := range rows {
		p.seqs[r.Seq] = n
	}
}

// forget drops the seqs no probe after done can list.
func (p *polled) forget(done int64) {
	maps.DeleteFunc(p.seqs, func(_, n int64) bool { return n+1 <= done })
}

// handed returns the rows of hs to publish in place of reading the shard,
// in seq order, or false when w must read its shard itself (see handoff).
// A synced worker with nothing handed reads its shard only when it last
// read it more than Config.PollMax ago: the probe hands over every row
// while its chain holds, and says so when it does not (mustRead), so a wake
// that finds the inbox empty (its rows taken by the round before) needs no
// read; the reads every PollMax find rows no probe lists (seqs that started
// over in a truncated table).
func (e *Engine) handed(w *shardWorker, hs []handoff, overflow bool) ([]Row, bool) {
	if _, ok := w.src.(Handover); !ok {
		// Nothing is handed over: every wake is a reason to read.
		return nil, false
	}
	switch {
	case overflow || !w.synced || w.marking.failed.Load():
		return nil, false
	case len(hs) == 0:
		return nil, e.since()-w.polledAt < e.cfg.PollMax
	}
	var rows []Row
	for _, h := range hs {
		if h.chain > w.polledAt || h.probe <= w.polled.blind+1 {
			return nil, false
		}
		for _, r := range h.rows {
			if _, ok := w.polled.seqs[r.Seq]; !ok {
				rows = append(rows, r)
			}
		}
	}
	// A late commit listed by a later probe has a lower seq: in seq order,
	// as a read would return them.
	slices.SortFunc(rows, func(a, b Row) int { return cmp.Compare(a.Seq, b.Seq) })
	return rows, true
}
