package relay

import (
	"context"
	"log/slog"
	"math"
	"time"
)

// horizonInterval is how often the engine asks each Seeker source which
// seqs are final: more than the 100 ms for which InnoDB keeps serving its
// list of running transactions from a cache while it is being read, so
// that one relay's readings find it fresh. sweepInterval is how often a
// worker of one still reads its shard from the start, in case seqs started
// over (a truncated table): no row stays behind a floor longer than that, or
// 4 times that while the shard drains a backlog (see from).
const (
	horizonInterval = 250 * time.Millisecond
	sweepInterval   = 30 * time.Second
	// horizonSamples bounds the head readings kept while a long transaction
	// runs; dropping the oldest only delays the horizon.
	horizonSamples = 600
	// trxStaleness bounds how old information_schema.innodb_trx may be:
	// InnoDB serves it from a cache refreshed at most every 100 ms, so a
	// transaction that started just before a reading may not be listed yet.
	trxStaleness = time.Second
)

// headSample is one Head reading: every seq up to seq was taken before at.
type headSample struct {
	seq int64
	at  time.Time
}

// horizon works out, for one Seeker source, the seq below which every row
// is final: no transaction that could still commit one runs. Only the
// coordinator's watchHorizon goroutine uses it.
type horizon struct {
	samples []headSample
	settled int64
	// head is the highest head read.
	head int64
}

// observe adds a Head reading and returns the settled seq, which never
// goes down.
func (h *horizon) observe(head int64, at, oldest time.Time) int64 {
	if head > 0 {
		h.samples = append(h.samples, headSample{seq: head, at: at})
	}
	h.head = max(h.head, head)
	// The samples taken before the oldest running transaction started (or
	// before now, when none runs) are final, provided the list of running
	// transactions, which may be trxStaleness old, is younger than them.
	n := 0
	for n < len(h.samples) {
		s := h.samples[n].at
		if !s.Before(at.Add(-trxStaleness)) || (!oldest.IsZero() && !s.Before(oldest)) {
			break
		}
		n++
	}
	for _, s := range h.samples[:n] {
		h.settled = max(h.settled, s.seq+1)
	}
	h.samples = h.samples[n:]
	if len(h.samples) > horizonSamples {
		h.samples = h.samples[len(h.samples)-horizonSamples:]
	}
	return h.settled
}

// watchHorizon keeps the settled seq of every Seeker source up to date,
// every horizonInterval, until ctx ends.
func (c *coordinator) watchHorizon(ctx context.Context) {
	e := c.e
	hs := map[string]*horizon{}
	warned := map[string]bool{}
	t := time.NewTicker(horizonInterval)
	defer t.Stop()
	for {
		for _, s := range e.sources {
			sk, ok := s.(Seeker)
			if !ok {
				continue
			}
			h := hs[s.Name()]
			if h == nil {
				h = &horizon{}
				hs[s.Name()] = h
			}
			head, at, oldest, err := sk.Head(ctx, e.db, max(h.head, e.seen[s.Name()].Load()))
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// Workers keep reading their shards from the start meanwhile:
				// correct, only slower under a backlog.
				level := slog.LevelDebug
				if !warned[s.Name()] {
					level, warned[s.Name()] = slog.LevelWarn, true
				}
				e.log.Log(ctx, level, "relay cannot tell which rows are final (the relay's database user needs the PROCESS privilege to read information_schema.innodb_trx); each poll reads its shard from the start",
					slog.String("source", s.Name()), slog.Any("error", err))
				continue
			}
			e.settled[s.Name()].Store(h.observe(head, at, oldest))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// from is where w's next poll starts: its floor, or the start of the shard
// when a sweep is due, a mark failed (its rows may lie below the floor), or
// the source cannot seek. A shard draining a
// backlog (its last read was full) puts the sweep off: the rows it delivered
// stay in the index, delete-marked, until purge removes them, and purge lags
// a fast drain, so a read from the start would step over all of them (1.5 s
// for a drained shard of 60k rows), for at most 4 sweep intervals; a shard
// whose floor skipped its rows finds nothing, is not backlogged, and sweeps.
func (e *Engine) from(w *shardWorker) int64 {
	failed := w.marking.failed.Swap(false)
	if _, ok := w.src.(Seeker); !ok || failed {
		return 0
	}
	if now := e.since(); now-w.swept >= sweepInterval && (!w.backlogged || now-w.swept >= 4*sweepInterval) {
		w.swept = now
		return 0
	}
	return w.floor
}

// advance moves w's floor after a round that read rows from a poll begun
// when the source's settled seq was settled: below the new floor every row
// is final and none is pending. rows are those read, in seq order;
// truncated says more may follow the last; firstPending is the lowest seq
// read and not delivered nor dead-lettered (0: none).
func (e *Engine) advance(w *shardWorker, settled int64, rows []Row, truncated bool, firstPending int64) {
	if _, ok := w.src.(Seeker); !ok {
		return
	}
	w.backlogged = truncated
	f := settled
	if truncated && len(rows) > 0 {
		f = min(f, rows[len(rows)-1].Seq+1)
	}
	if firstPending > 0 {
		f = min(f, firstPending)
	}
	w.floor = f
}

// noFront marks a shard that is not draining a backlog.
const noFront = math.MaxInt64

// setFront records where w reads next while it drains a backlog (noFront:
// it does not).
func (e *Engine) setFront(w *shardWorker, seq int64) {
	e.fronts[w.src.Name()][w.shard].Store(seq)
}

// ahead reports whether w, draining a backlog, is more than a window of
// seqs ahead of the slowest shard of its source that drains one too: it
// then waits for the others. Rows are inserted in seq order whatever their
// shard, so shards that keep together delete, and leave to purge, the same
// pages of the seq and id indexes, as one loop in seq order does; shards
// drifting apart across a large backlog spread over the whole of both, more
// than the buffer pool holds, and purge falls behind (the drain's misses per
// row grew tenfold). The slowest shard never waits, and a shard that stops
// draining (caught up, failing, held) stops holding the others back.
func (e *Engine) ahead(w *shardWorker) bool {
	fs := e.fronts[w.src.Name()]
	front := fs[w.shard].Load()
	if front == noFront {
		return false
	}
	low := front
	for i := range fs {
		low = min(low, fs[i].Load())
	}
	return front-low > int64(2*e.cfg.BatchSize*e.cfg.Shards)
}
