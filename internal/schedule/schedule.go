// Package schedule runs the daemons' periodic jobs: Every for a fixed
// interval (metrics refreshes, probes), Cron for the user-configured cron
// specs (purges, check-back scans), with robfig/cron set up one way.
package schedule

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/robfig/cron/v3"
)

// Every runs job at once and then every d until ctx ends, on the caller's
// goroutine, so runs never overlap; it returns when ctx ends.
func Every(ctx context.Context, d time.Duration, job func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		job(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Cron starts job on the cron spec (robfig/cron's standard syntax plus
// descriptors such as "@every 1m"). Runs never overlap: one still running
// when the next is due makes that one skip. A panic in job is recovered and
// logged at error level on log. stop stops the schedule and waits for a
// running job.
func Cron(spec string, log *slog.Logger, job func()) (stop func(), err error) {
	logger := cron.PrintfLogger(slog.NewLogLogger(log.Handler(), slog.LevelError))
	// Recover goes inside SkipIfStillRunning: that wrapper hands its token
	// back only when the job returns, so a panic escaping to an outer
	// Recover would skip every later run.
	c := cron.New(cron.WithChain(cron.SkipIfStillRunning(logger), cron.Recover(logger)))
	if _, err := c.AddFunc(spec, job); err != nil {
		return nil, fmt.Errorf("schedule %q: %w", spec, err)
	}
	c.Start()
	return func() { <-c.Stop().Done() }, nil
}

// Age is how long ago t was, never negative; zero for the zero time (no
// oldest row).
func Age(t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return max(time.Since(t), 0)
}
