package relay

import (
	"context"
	"log/slog"
	"time"
)

// busyFallback is how often an idle worker of a Busy source polls on its own
// (or Config.PollMax when longer): watchBusy wakes it sooner when its shard
// holds rows. Its polls catch what a failed look missed.
const busyFallback = time.Second

// watchBusy asks every PollMax which shards of each Busy source hold rows
// and wakes their workers (the shards of other relays are woken for
// nothing: they have no worker here, and a waiting wake costs one early
// poll when the shard is claimed later). It returns at once when no source
// is Busy.
func (c *coordinator) watchBusy(ctx context.Context) {
	e := c.e
	var srcs []Busy
	for _, s := range e.sources {
		if b, ok := s.(Busy); ok {
			if _, ok := s.(Changes); !ok {
				srcs = append(srcs, b)
			}
		}
	}
	if len(srcs) == 0 {
		return
	}
	tick := time.NewTicker(e.cfg.PollMax)
	defer tick.Stop()
	for {
		for _, b := range srcs {
			shards, err := b.BusyShards(ctx, e.db, e.cfg.Shards)
			if err != nil {
				// The workers' own polls carry on meanwhile.
				if ctx.Err() == nil {
					e.metrics.Error(b.Name(), "poll")
					e.log.Debug("relay busy shards look failed", slog.String("source", b.Name()), slog.Any("error", err))
				}
				continue
			}
			for _, shard := range shards {
				e.Wake(b.Name(), shard)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
