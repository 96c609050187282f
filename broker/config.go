package broker

import (
	"net"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/setting"
	"github.com/txmsg/txmsg/relay"
)

// Config configures a Server (the `txmsg broker` daemon). DefaultConfig
// holds the defaults noted; WithDefaults fills the zero fields of a Config
// with them, and NewServer does so before it validates. The struct tags name
// each field's configuration key and describe it.
type Config struct {
	// Listen is the API's address (default ":7070").
	Listen string `key:"broker.listen" flag:"listen" help:"HOST:PORT of the half-message HTTP API"`
	// MaxBodyBytes limits an API request body (default 2 MiB).
	MaxBodyBytes int64 `key:"broker.max_body_bytes" help:"largest API request body"`
	// MaxValueBytes limits a message value (default 1 MiB).
	MaxValueBytes int `key:"broker.max_value_bytes" help:"largest message value"`
	// CheckTimeout is the delay from prepare to the first check-back, and the
	// start of the backoff between checks (checkback.timeout, default 6s);
	// a message may override it.
	CheckTimeout time.Duration `key:"checkback.timeout" help:"delay from prepare to the first check-back, and the first backoff"`
	// MaxChecks is how many check-backs a message gets before it is
	// discarded (checkback.max_checks, default 15); a message may override it.
	MaxChecks int `key:"checkback.max_checks" help:"check-backs before an unresolved message is discarded"`
	// MaxInterval caps the backoff between two checks of a message
	// (checkback.max_interval, default 5m).
	MaxInterval time.Duration `key:"checkback.max_interval" help:"longest backoff between two checks of a message"`
	// ScanSchedule is the cron spec of the check-back scan (checkback.scan,
	// default "@every 1s").
	ScanSchedule string `key:"checkback.scan" help:"cron spec of the scan for messages due a check-back"`
	// Concurrency is the most check-back calls in flight per instance
	// (checkback.concurrency, default 16).
	Concurrency int `key:"checkback.concurrency" help:"most check-back calls in flight"`
	// CallTimeout bounds one check-back call (checkback.call_timeout,
	// default 3s).
	CallTimeout time.Duration `key:"checkback.call_timeout" help:"timeout of one check-back call"`
	// BacklogInterval is how often the prepared-backlog metric is refreshed
	// (default 5s).
	BacklogInterval time.Duration `key:"broker.backlog_interval" help:"how often the prepared-backlog metric is refreshed"`
	// ShutdownTimeout bounds how long Run waits for API requests in flight
	// after its context ends (default 10s).
	ShutdownTimeout time.Duration `key:"broker.shutdown_timeout" help:"how long shutdown waits for API requests in flight"`
	// Relay configures the engine that delivers committed messages; its
	// Shards is also the store's shard count. Its defaults are
	// relay.DefaultConfig's but for two: Retention, how long delivered and
	// rolled back messages are kept (so that a late repeated commit still
	// answers idempotently, and for inspection), is 24h; discarded messages
	// are never purged. PollMax is 50ms, which bounds commit → Kafka latency
	// on an idle shard.
	Relay relay.Config
}

// DefaultConfig returns the defaults of every field; Relay.Brokers stay
// empty.
func DefaultConfig() Config {
	sc := DefaultScannerConfig()
	c := Config{
		Listen:          ":7070",
		MaxBodyBytes:    DefaultMaxBodyBytes,
		MaxValueBytes:   txmsg.DefaultMaxValueBytes,
		CheckTimeout:    DefaultCheckTimeout,
		MaxChecks:       DefaultMaxChecks,
		MaxInterval:     sc.MaxInterval,
		ScanSchedule:    sc.Schedule,
		Concurrency:     sc.Concurrency,
		CallTimeout:     sc.CallTimeout,
		BacklogInterval: 5 * time.Second,
		ShutdownTimeout: 10 * time.Second,
		Relay:           relay.DefaultConfig(),
	}
	c.Relay.Retention = 24 * time.Hour
	// A producer's or operator's commit wakes its shard; one decided by
	// check-back is noticed by polling: keep that wait short.
	c.Relay.PollMax = 50 * time.Millisecond
	return c
}

// WithDefaults returns a copy of c whose zero fields, and those of c.Relay,
// hold DefaultConfig's values (then see relay.Config.WithDefaults). c is
// not changed.
func (c Config) WithDefaults() Config {
	setting.FillZero(&c, DefaultConfig())
	c.Relay = c.Relay.WithDefaults()
	return c
}

// Validate checks every field, c.Relay's too, without changing c, and names
// each bad one by its configuration key, as in "checkback.max_checks: 0:
// want 1 to 1000". Call WithDefaults first to fill a partial Config.
func (c Config) Validate() error {
	var p setting.Problems
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.Add("broker.listen", c.Listen, "want HOST:PORT (HOST may be empty for every interface)")
	}
	p.Check(c.MaxBodyBytes >= 1024 && c.MaxBodyBytes <= 1<<30, "broker.max_body_bytes", c.MaxBodyBytes, "want 1024 to 1073741824")
	switch {
	case c.MaxValueBytes < 1 || c.MaxValueBytes > 1<<30:
		p.Add("broker.max_value_bytes", c.MaxValueBytes, "want 1 to 1073741824")
	case int64(c.MaxValueBytes) > c.MaxBodyBytes:
		p.Add("broker.max_value_bytes", c.MaxValueBytes, "want at most broker.max_body_bytes ("+setting.Show(c.MaxBodyBytes)+")")
	}
	p.Check(c.CheckTimeout >= time.Millisecond && c.CheckTimeout <= MaxCheckTimeout, "checkback.timeout", c.CheckTimeout,
		"want 1ms to "+setting.FormatDuration(MaxCheckTimeout))
	p.Check(c.MaxChecks >= 1 && c.MaxChecks <= MaxMaxChecks, "checkback.max_checks", c.MaxChecks, "want 1 to "+setting.Show(MaxMaxChecks))
	p.Check(c.BacklogInterval >= 10*time.Millisecond, "broker.backlog_interval", c.BacklogInterval, "want at least 10ms")
	p.Check(c.ShutdownTimeout >= time.Millisecond, "broker.shutdown_timeout", c.ShutdownTimeout, "want at least 1ms")
	p.Join(c.scanner().Validate())
	p.Join(c.Relay.Validate())
	return p.Err()
}

func (c Config) scanner() ScannerConfig {
	return ScannerConfig{Schedule: c.ScanSchedule, Concurrency: c.Concurrency,
		CallTimeout: c.CallTimeout, MaxInterval: c.MaxInterval}
}
