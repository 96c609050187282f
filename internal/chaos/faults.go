package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/txmsg/txmsg/internal/backoff"
)

// fault is one kind of trouble the soak makes.
type fault struct {
	name string
	do   func(ctx context.Context) (string, error) // returns what it did
}

// faultList is every kind of fault; the schedule deals them in rounds, each
// round a random permutation, so that a run sees every kind.
func (s *soak) faultList() []fault {
	return []fault{
		{"kill -9 relay", s.killRestart(kindRelay)},
		{"kill -9 broker", s.killRestart(kindBroker)},
		{"kill -9 consumer", s.killRestart(kindConsumer)},
		{"SIGSTOP relay past its lease", s.pauseRelay},
		{"refuse produces", s.refuseProduces},
		{"slow produce responses past the lease", s.slowProduces},
		{"delete topic", s.deleteTopic},
		{"kill every database connection", s.killConnections},
	}
}

// strikeFaults strikes faults until ctx ends.
func (s *soak) strikeFaults(ctx context.Context) {
	faults := s.faultList()
	for {
		for _, i := range s.rng.Perm(len(faults)) {
			gap := time.Duration(float64(s.cfg.FaultEvery) * (0.5 + s.rng.Float64()))
			if !backoff.Sleep(ctx, gap) {
				return
			}
			if err := s.fleet.heal(); err != nil {
				s.log.Warn("restart processes", slog.Any("err", err))
			}
			f := faults[i]
			what, err := f.do(ctx)
			s.faults.Add(1)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("fault failed", slog.String("fault", f.name), slog.Any("err", err))
				continue
			}
			s.log.Info("fault", slog.String("fault", f.name), slog.String("did", what),
				slog.Duration("at", time.Since(s.start).Round(time.Millisecond)))
		}
	}
}

// killRestart kills a random process of kind with SIGKILL and starts it
// again after up to 2s.
func (s *soak) killRestart(kind string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		p := s.fleet.pick(s.rng, kind)
		if err := p.kill(); err != nil {
			return "", err
		}
		down := time.Duration(s.rng.Int64N(int64(2 * time.Second)))
		if !backoff.Sleep(ctx, down) {
			return p.name + " killed", nil // heal starts it again
		}
		return fmt.Sprintf("%s killed, restarted after %v", p.name, down.Round(time.Millisecond)), s.fleet.start(p)
	}
}

// pauseRelay stops a random relay with SIGSTOP for its lease and 2s more,
// so that its shards move, then resumes it with SIGCONT.
func (s *soak) pauseRelay(ctx context.Context) (string, error) {
	p := s.fleet.pick(s.rng, kindRelay)
	if !p.running() {
		return p.name + " not running", nil
	}
	if err := p.pause(true); err != nil {
		return "", err
	}
	d := s.cfg.LeaseTTL + 2*time.Second
	backoff.Sleep(ctx, d)
	return fmt.Sprintf("%s stopped for %v", p.name, d), p.pause(false)
}

// refuseProduces refuses produce requests for 2 to 5s: every partition
// with a retriable error, partition 0 only, or by closing connections.
func (s *soak) refuseProduces(context.Context) (string, error) {
	d := 2*time.Second + time.Duration(s.rng.Int64N(int64(3*time.Second)))
	switch s.rng.IntN(3) {
	case 0:
		strike(&s.kafka.refuseAll, d)
		return fmt.Sprintf("NOT_ENOUGH_REPLICAS for %v", d.Round(time.Millisecond)), nil
	case 1:
		strike(&s.kafka.refuseOne, d)
		return fmt.Sprintf("NOT_ENOUGH_REPLICAS on partition 0 for %v", d.Round(time.Millisecond)), nil
	default:
		strike(&s.kafka.dropConns, d)
		return fmt.Sprintf("connections closed for %v", d.Round(time.Millisecond)), nil
	}
}

// slowProduces holds produce requests back by the lease and 1s more, for
// the lease and 2s: a relay's round outlives its lease, and the next
// owner writes meanwhile.
func (s *soak) slowProduces(context.Context) (string, error) {
	d := s.cfg.LeaseTTL + 2*time.Second
	strike(&s.kafka.slow, d)
	return fmt.Sprintf("responses %v late for %v", s.kafka.slowBy, d), nil
}

// killConnections kills every connection to the database.
func (s *soak) killConnections(ctx context.Context) (string, error) {
	n, err := s.db.killConnections(ctx)
	return fmt.Sprintf("%d connections killed", n), err
}
