package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/relay"
)

// Config configures a Server (the `txmsg broker` daemon). Zero fields take
// the defaults noted; Validate fills them in and names the first bad field.
type Config struct {
	// Listen is the API's address (default ":7070").
	Listen string
	// MaxBodyBytes limits an API request body (default 2 MiB).
	MaxBodyBytes int64
	// MaxValueBytes limits a message value (default 1 MiB).
	MaxValueBytes int
	// CheckTimeout is the delay from prepare to the first check-back, and the
	// start of the backoff between checks (checkback.timeout, default 6s);
	// a message may override it.
	CheckTimeout time.Duration
	// MaxChecks is how many check-backs a message gets before it is
	// discarded (checkback.max_checks, default 15); a message may override it.
	MaxChecks int
	// MaxInterval caps the backoff between two checks of a message
	// (checkback.max_interval, default 5m).
	MaxInterval time.Duration
	// ScanSchedule is the cron spec of the check-back scan (checkback.scan,
	// default "@every 1s").
	ScanSchedule string
	// Concurrency is the most check-back calls in flight per instance
	// (checkback.concurrency, default 16).
	Concurrency int
	// CallTimeout bounds one check-back call (checkback.call_timeout,
	// default 3s).
	CallTimeout time.Duration
	// BacklogInterval is how often the prepared-backlog metric is refreshed
	// (default 5s).
	BacklogInterval time.Duration
	// ShutdownTimeout bounds how long Run waits for API requests in flight
	// after its context ends (default 10s).
	ShutdownTimeout time.Duration
	// Relay configures the engine that delivers committed messages; its
	// Shards is also the store's shard count. Its Retention, how long
	// delivered and rolled back messages are kept (so that a late repeated
	// commit still answers idempotently, and for inspection), defaults to
	// 24h here; discarded messages are never purged. Its PollMax defaults
	// to 50ms here, which bounds commit → Kafka latency on an idle shard.
	Relay relay.Config
}

// Validate fills in defaults and checks every field, naming the bad one.
func (c *Config) Validate() error {
	if c.Listen == "" {
		c.Listen = ":7070"
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = txmsg.DefaultMaxValueBytes
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = DefaultCheckTimeout
	}
	if c.MaxChecks == 0 {
		c.MaxChecks = DefaultMaxChecks
	}
	if c.BacklogInterval == 0 {
		c.BacklogInterval = 5 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	switch {
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("broker: max_body_bytes %d: want at least 1024", c.MaxBodyBytes)
	case c.MaxValueBytes < 1 || int64(c.MaxValueBytes) > c.MaxBodyBytes:
		return fmt.Errorf("broker: max_value_bytes %d: want 1 to max_body_bytes (%d)", c.MaxValueBytes, c.MaxBodyBytes)
	case c.CheckTimeout < time.Millisecond || c.CheckTimeout > MaxCheckTimeout:
		return fmt.Errorf("broker: checkback.timeout %v: want 1ms to %v", c.CheckTimeout, MaxCheckTimeout)
	case c.MaxChecks < 1 || c.MaxChecks > MaxMaxChecks:
		return fmt.Errorf("broker: checkback.max_checks %d: want 1 to %d", c.MaxChecks, MaxMaxChecks)
	case c.BacklogInterval <= 0:
		return errors.New("broker: backlog_interval: want more than 0")
	case c.ShutdownTimeout <= 0:
		return errors.New("broker: shutdown_timeout: want more than 0")
	}
	cb := c.scanner()
	if err := cb.Validate(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	c.ScanSchedule, c.Concurrency, c.CallTimeout, c.MaxInterval = cb.Schedule, cb.Concurrency, cb.CallTimeout, cb.MaxInterval
	if c.Relay.Retention == 0 {
		c.Relay.Retention = 24 * time.Hour
	}
	if c.Relay.PollMax == 0 {
		// A producer's or operator's commit wakes its shard; one decided
		// by check-back is noticed by polling: keep that wait short.
		c.Relay.PollMax = 50 * time.Millisecond
	}
	if err := c.Relay.Validate(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}

func (c *Config) scanner() ScannerConfig {
	return ScannerConfig{Schedule: c.ScanSchedule, Concurrency: c.Concurrency,
		CallTimeout: c.CallTimeout, MaxInterval: c.MaxInterval}
}
