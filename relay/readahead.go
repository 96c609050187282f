package relay

import (
	"context"
	"log/slog"
	"slices"
	"sync/atomic"
)

// ShardReader is a Seeker source that reads the pending rows of several
// shards, each from its own seq, with one statement. The change probe then
// reads for every idle shard it wakes at once (see readAhead), where each
// woken worker would poll on its own: at a trickle, polls were one
// statement, and one thread wake-up on both sides, per round.
type ShardReader interface {
	// PendingShards returns, for each shard of from, what PendingFrom
	// returns for it from from[shard], all as of one snapshot.
	PendingShards(ctx context.Context, q Querier, from map[int]int64, limit Limit) (map[int][]Row, error)
}

// parking is an idle shard worker's offer to have its shard read for it
// (idle), and what the change probe read there (gift). parks[source][shard]
// is made once in New.
type parking struct {
	idle atomic.Pointer[idleAt]
	gift atomic.Pointer[gift]
}

// idleAt is where an idle worker would read its shard from next; token names
// the offer.
type idleAt struct {
	from  int64
	token uint64
}

// gift is a read made for the worker that offered token: the rows its poll
// would have returned, and the source's settled seq read before them.
type gift struct {
	token   uint64
	rows    []Row
	settled int64
}

// park is called by w's goroutine before it waits for a wake with nothing
// pending: it offers the change probe to read w's shard for it, unless w
// must read for itself (a sweep from the shard's start is due, the source
// cannot read several shards at once, or polls need a transaction).
func (e *Engine) park(w *shardWorker) {
	w.token = 0
	if _, ok := w.src.(ShardReader); !ok || e.pollInTx || e.since()-w.swept >= sweepInterval {
		return
	}
	w.token = e.tokens.Add(1)
	e.parks[w.src.Name()][w.shard].idle.Store(&idleAt{from: w.floor, token: w.token})
}

// unpark is called by w's goroutine as a round starts: it withdraws w's
// offer and returns the read made for it, if any. A read made for an
// earlier offer (a round ran since, or another worker of the shard made it)
// is dropped: w's state may have moved past it.
func (e *Engine) unpark(w *shardWorker) *gift {
	p := &e.parks[w.src.Name()][w.shard]
	p.idle.Store(nil)
	g := p.gift.Swap(nil)
	token := w.token
	w.token = 0
	if g == nil || token == 0 || g.token != token {
		return nil
	}
	return g
}

// readAhead reads, with one statement, the shards of woken whose workers
// wait idle, leaves each worker its rows, and wakes every shard of woken.
// A worker woken otherwise meanwhile polls for itself and drops the read
// (see unpark); a failed read leaves every worker to poll for itself.
func (c *coordinator) readAhead(ctx context.Context, r ShardReader, s Source, woken []int) {
	e := c.e
	parks := e.parks[s.Name()]
	from := map[int]int64{}
	tokens := map[int]uint64{}
	for _, shard := range woken {
		if i := parks[shard].idle.Swap(nil); i != nil {
			from[shard], tokens[shard] = i.from, i.token
			continue
		}
		e.Wake(s.Name(), shard)
	}
	if len(from) == 0 {
		return
	}
	defer func() {
		for shard := range from {
			e.Wake(s.Name(), shard)
		}
	}()
	// Read before the rows: the rows below it were final when they were read.
	settled := e.settled[s.Name()].Load()
	rows, err := r.PendingShards(ctx, e.db, from, Limit{Rows: e.cfg.BatchSize, Bytes: e.cfg.BatchBytes})
	if err != nil {
		if ctx.Err() == nil {
			e.metrics.Error(s.Name(), "poll")
			e.log.Debug("relay read-ahead failed", slog.String("source", s.Name()), slog.Any("error", err))
		}
		return
	}
	var last int64
	for shard, token := range tokens {
		rs := rows[shard]
		if len(rs) > 0 {
			last = max(last, rs[len(rs)-1].Seq)
		}
		parks[shard].gift.Store(&gift{token: token, rows: rs, settled: settled})
	}
	if last > 0 {
		e.saw(s.Name(), last)
	}
}

// wokenShards are the shards of as below Config.Shards, once each, in the
// order they arrived; a shard beyond them is reported.
func (c *coordinator) wokenShards(s Source, as []Arrival) []int {
	var woken []int
	for _, a := range as {
		if slices.Contains(woken, a.Shard) {
			continue
		}
		if a.Shard >= c.e.cfg.Shards {
			c.strayShard(s, a.Shard)
			continue
		}
		woken = append(woken, a.Shard)
	}
	return woken
}
