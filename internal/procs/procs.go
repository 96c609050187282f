// Package procs fits the Go scheduler's parallelism to a daemon's load: one
// P (GOMAXPROCS=1) while the process needs less than a core, the runtime's
// default (the CPUs, or the container's quota) while it needs more.
//
// A relay at a trickle wakes thousands of times a second (probes, rounds,
// Kafka and database replies), each wake-up brief. With several Ps, each one
// also wakes an idle thread to spin looking for more work, CPU that a small
// host's database needs for the producers' commits. Measured at 1,000 msg/s
// on two vCPUs beside MariaDB: one P cut the relay's CPU per message by a
// fifth and the machine's load by 6 points, and the producers' transaction
// p99 fell from 1.7–2.6× the dual write's to 1.2–1.3×; a backlog drain was
// no slower. A process that needs more than a core gets the default back.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

// Thresholds of the rule, in cores the process used over a tick: at one P,
// up when it used up past busy (the P nearly saturated); at the default, down
// after calmTicks ticks in a row under calm. The gap between them keeps a
// load near either from switching back and forth.
const (
	tick      = time.Second
	busy      = 0.8
	calm      = 0.4
	calmTicks = 10
)

// governing is set while a Govern runs: GOMAXPROCS is the process's.
var governing atomic.Bool

// Govern keeps GOMAXPROCS fitted to the process's load until ctx ends, then
// gives the runtime its default back. It returns at once, changing nothing,
// when the GOMAXPROCS environment variable sets it (the operator's choice),
// when the default is already 1, where the process's CPU time cannot be read,
// or when another Govern runs.
func Govern(ctx context.Context, log *slog.Logger) {
	g := governor{tick: tick, busy: busy, calm: calm, calmTicks: calmTicks}
	g.run(ctx, log)
}

// governor is Govern's rule, its thresholds fields so that tests can scale
// them.
type governor struct {
	tick       time.Duration
	busy, calm float64
	calmTicks  int
	// calmFor counts the ticks in a row under calm at the default.
	calmFor int
}

func (g *governor) run(ctx context.Context, log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" || !governing.CompareAndSwap(false, true) {
		return
	}
	defer governing.Store(false)
	runtime.SetDefaultGOMAXPROCS()
	last, ok := cpuTime()
	if runtime.GOMAXPROCS(0) <= 1 || !ok {
		return
	}
	defer runtime.SetDefaultGOMAXPROCS()
	runtime.GOMAXPROCS(1)
	lastAt := time.Now()
	t := time.NewTicker(g.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			used, ok := cpuTime()
			if !ok {
				return
			}
			cores := (used - last).Seconds() / now.Sub(lastAt).Seconds()
			last, lastAt = used, now
			from := runtime.GOMAXPROCS(0)
			switch g.fit(from == 1, cores) {
			case up:
				runtime.SetDefaultGOMAXPROCS()
			case down:
				runtime.GOMAXPROCS(1)
			default:
				continue
			}
			log.Debug("GOMAXPROCS fitted to the load", slog.Int("from", from), slog.Int("to", runtime.GOMAXPROCS(0)),
				slog.Float64("cores_used", cores))
		}
	}
}

// A move is what fit asks for.
type move int

const (
	stay move = iota
	// up gives the runtime its default back.
	up
	// down sets one P.
	down
)

// fit returns the move after a tick in which the process used cores, at one
// P or at the default.
func (g *governor) fit(atOne bool, cores float64) move {
	switch {
	case atOne:
		g.calmFor = 0
		if cores >= g.busy {
			return up
		}
	case cores >= g.calm:
		g.calmFor = 0
	default:
		if g.calmFor++; g.calmFor >= g.calmTicks {
			g.calmFor = 0
			return down
		}
	}
	return stay
}
