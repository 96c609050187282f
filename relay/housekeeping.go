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
	schedule.Every(ctx, e.cfg.BacklogInterval, func(ctx context.Context) {
		for _, s := range e.sources {
			n, oldest, err := s.Backlog(ctx, e.db)
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

// checkStrays reports rows of s that no lease covers (see Strays).
func (c *coordinator) checkStrays(ctx context.Context, s Source) {
	e := c.e
	st, ok := s.(Strays)
	if !ok {
		return
	}
	shard, err := st.StrayShard(ctx, e.db, e.cfg.Shards)
	if err != nil || shard < 0 {
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
