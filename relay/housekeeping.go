package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/txmsg/txmsg/internal/schedule"
)

// backlogLoop refreshes the pending-row metrics every BacklogInterval, and
// reports rows no lease covers (see Strays).
func (c *coordinator) backlogLoop(ctx context.Context) {
	e := c.e
	from := map[string][]int64{}
	schedule.Every(ctx, e.cfg.BacklogInterval, func(ctx context.Context) {
		for _, s := range e.sources {
			var n int64
			var oldest time.Time
			var err error
			if sb, ok := s.(ShardBacklog); ok {
				n, oldest, err = e.shardBacklog(ctx, sb, s.Name(), from)
			} else {
				n, oldest, err = s.Backlog(ctx, e.db)
			}
			if err != nil {
				if ctx.Err() == nil {
					e.metrics.Error(s.Name(), "backlog")
				}
				continue
			}
			e.metrics.Backlog(s.Name(), n, schedule.Age(oldest))
			c.checkStrays(ctx, s)
		}
	})
}

// shardBacklog reads the backlog of src shard by shard from from[name], and
// moves each shard's start up to its first pending row, but not past the
// settled seq read before the reading: a row below it that was not pending
// then never will be, while above it a row may still commit. Without a
// horizon (settled stays 0) every reading starts from the shards' start.
func (e *Engine) shardBacklog(ctx context.Context, sb ShardBacklog, name string, from map[string][]int64) (int64, time.Time, error) {
	f := from[name]
	if f == nil {
		f = make([]int64, e.cfg.Shards)
		from[name] = f
	}
	var settled int64
	if a := e.settled[name]; a != nil {
		settled = a.Load()
	}
	n, oldest, lows, err := sb.BacklogFrom(ctx, e.db, f)
	if err != nil {
		return 0, time.Time{}, err
	}
	for shard, low := range lows {
		next := settled
		if low >= 0 {
			next = min(low, settled)
		}
		f[shard] = max(f[shard], next)
	}
	return n, oldest, nil
}

// checkStrays reports rows of s that no lease covers (see Strays).
func (c *coordinator) checkStrays(ctx context.Context, s Source) {
	e := c.e
	st, ok := s.(Strays)
	if !ok {
		return
	}
	shard, err := st.StrayShard(ctx, e.db, e.cfg.Shards)
	if err != nil {
		if ctx.Err() == nil {
			e.metrics.Error(s.Name(), "backlog")
		}
		return
	}
	if shard < 0 {
		return
	}
	c.strayShard(s, shard)
}

// startPurge schedules the retention purge when Config.Retention is set, and
// returns the function that stops it and waits for a running purge.
func (c *coordinator) startPurge(ctx context.Context) (stop func(), err error) {
	e := c.e
	if e.cfg.Retention <= 0 {
		return func() {}, nil
	}
	stop, err = schedule.Cron(e.cfg.PurgeSchedule, e.log, func() { c.purge(ctx) })
	if err != nil {
		return nil, fmt.Errorf("relay: purge_schedule: %w", err)
	}
	return stop, nil
}

// purge deletes delivered rows past the retention, PurgeBatch rows per
// statement (each its own short transaction), so writers are never blocked
// for long.
func (c *coordinator) purge(ctx context.Context) {
	e := c.e
	before := time.Now().Add(-e.cfg.Retention)
	for _, s := range e.sources {
		p, ok := s.(Purger)
		if !ok {
			continue
		}
		for ctx.Err() == nil {
			n, err := p.Purge(ctx, e.db, before, e.cfg.PurgeBatch)
			if err != nil {
				e.metrics.Error(s.Name(), "purge")
				e.log.Warn("relay purge failed", slog.String("source", s.Name()), slog.Any("error", err))
				break
			}
			e.metrics.Purged(s.Name(), n)
			if n < int64(e.cfg.PurgeBatch) {
				break
			}
		}
	}
}
