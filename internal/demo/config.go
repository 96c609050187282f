package demo

import (
	"fmt"
	"log/slog"
	"time"
)

// Config is a demo run's settings. Its errors name the `txmsg dev` flags.
type Config struct {
	// Duration is how long to produce; 0 produces until ctx ends.
	Duration time.Duration
	// Rate is orders per second, over all producers.
	Rate float64
	// Rollback is the fraction of transactions rolled back on purpose.
	Rollback float64
	// Producers is the number of concurrent producer transactions.
	Producers int
	// Drain bounds the wait for the relay and the consumer at the end.
	Drain time.Duration
	// MetricsListen serves /healthz, /readyz and /metrics there; empty: off.
	MetricsListen string
	// Log is the relay's and the consumer's logger (default: discard).
	Log *slog.Logger
}

// Validate checks c.
func (c Config) Validate() error {
	switch {
	case c.Duration < 0:
		return fmt.Errorf("--duration %v: want 0 (until Ctrl-C) or more", c.Duration)
	case c.Rate <= 0:
		return fmt.Errorf("--rate %v: want more than 0", c.Rate)
	case c.Rollback < 0 || c.Rollback >= 1:
		return fmt.Errorf("--rollback %v: want 0 to less than 1", c.Rollback)
	case c.Producers < 1 || c.Producers > 64:
		return fmt.Errorf("--producers %d: want 1 to 64", c.Producers)
	case c.Drain <= 0:
		return fmt.Errorf("--drain %v: want more than 0", c.Drain)
	}
	return nil
}
