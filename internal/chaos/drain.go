package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/txmsg/txmsg/internal/backoff"
)

// progressQuery counts what is still on its way: pending outbox rows, half
// messages prepared or committed but not delivered, committed messages the
// consumers read, and effects applied.
const progressQuery = `SELECT
  (SELECT COUNT(*) FROM txmsg_outbox),
  (SELECT COUNT(*) FROM txmsg_half_messages WHERE state IN (1, 2)),
  (SELECT COUNT(*) FROM chaos_orders WHERE topic = ?) + (SELECT COUNT(*) FROM chaos_payments),
  (SELECT COUNT(*) FROM chaos_effects)`

// progress is one reading of progressQuery.
type progress struct {
	outbox, half, consumable, applied int
}

func (p progress) done() bool {
	return p.outbox == 0 && p.half == 0 && p.applied >= p.consumable
}

func (p progress) String() string {
	return fmt.Sprintf("outbox pending %d, half pending %d, effects %d of %d", p.outbox, p.half, p.applied, p.consumable)
}

// drain waits, at most cfg.Drain, until nothing is pending and every
// consumable message has its effect, keeping the processes up, and returns
// how long it waited.
func (s *soak) drain(ctx context.Context) time.Duration {
	start := time.Now()
	deadline := start.Add(s.cfg.Drain)
	lastLog := start
	for {
		var p progress
		err := s.db.db.QueryRowContext(ctx, progressQuery, topicOutbox).Scan(&p.outbox, &p.half, &p.consumable, &p.applied)
		switch {
		case err == nil && p.done():
			s.log.Info("drained", slog.String("progress", p.String()), slog.Duration("after", time.Since(start).Round(time.Millisecond)))
			return time.Since(start)
		case time.Now().After(deadline):
			s.log.Warn("drain deadline passed", slog.String("progress", p.String()), slog.Any("err", err))
			return time.Since(start)
		case time.Since(lastLog) > 5*time.Second:
			s.log.Info("draining", slog.String("progress", p.String()), slog.Any("err", err))
			lastLog = time.Now()
		}
		if err := s.fleet.heal(); err != nil {
			s.log.Warn("restart processes", slog.Any("err", err))
		}
		if !backoff.Sleep(ctx, 500*time.Millisecond) {
			return time.Since(start)
		}
	}
}
