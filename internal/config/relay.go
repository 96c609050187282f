package config

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/txmsg/txmsg/relay"
)

// Relay is the configuration of `txmsg relay`.
type Relay struct {
	DB      DB
	Kafka   Kafka
	Relay   relay.Config
	Metrics Metrics
	Log     Log
}

// Admin is the configuration of the one-shot commands that only need the
// database: migrate, outbox dead, half.
type Admin struct {
	DB  DB
	Log Log
}

func relayKeys() []key {
	return []key{
		{"relay.shards", "relay.shards", "16", "number of shards; must equal the producers' outbox shards"},
		{"relay.batch_size", "relay.batch_size", "1000", "most rows read and published per shard per round"},
		{"relay.batch_bytes", "relay.batch_bytes", "4194304", "most bytes of keys and values read per round"},
		{"relay.concurrency", "relay.concurrency", "16", "most shards publishing a round at once"},
		{"relay.poll_min", "relay.poll_min", "2ms", "wait after a partial round; how often new rows are looked for"},
		{"relay.poll_max", "relay.poll_max", "0s", "longest wait when a shard is idle; 0 means 250ms (50ms in the broker)"},
		{"relay.lease_ttl", "relay.lease_ttl", "10s", "shard lease lifetime; a dead relay's shards move after it"},
		{"relay.heartbeat", "relay.heartbeat", "0s", "lease renewal interval; 0 means lease_ttl/3"},
		{"relay.retry_initial", "relay.retry_initial", "100ms", "first backoff after a failed round"},
		{"relay.retry_max", "relay.retry_max", "10s", "longest backoff after failed rounds"},
		{"relay.max_attempts", "relay.max_attempts", "3", "attempts before a message Kafka refuses is dead-lettered"},
		{"relay.retention", "relay.retention", "0s", "keep delivered rows this long; 0 deletes on delivery"},
		{"relay.purge_schedule", "relay.purge_schedule", "@every 1m", "cron spec of the retention purge"},
		{"relay.purge_batch", "relay.purge_batch", "1000", "most rows one purge statement deletes"},
		{"relay.backlog_interval", "relay.backlog_interval", "5s", "how often pending-row metrics are refreshed"},
		{"relay.shutdown_timeout", "relay.shutdown_timeout", "10s", "how long shutdown waits for in-flight batches"},
		{"relay.owner", "relay.owner", "", "this instance's name in the lease table; empty means host-pid-random"},
	}
}

// NewRelay registers the relay's flags on fs (--config, --dsn, --brokers and
// one flag per key, named after it) and returns its Loader.
func NewRelay(fs *pflag.FlagSet) *Loader[Relay] {
	keys := concat(dbKeys(""), kafkaKeys(), relayKeys(), metricsKeys(DefaultRelayMetricsListen), logKeys())
	return newLoader(fs, keys, func(r *reader) Relay {
		c := Relay{DB: r.db(), Kafka: r.kafka(), Relay: r.relay(), Metrics: r.metrics(), Log: r.log()}
		c.Relay.Brokers = c.Kafka.Brokers
		c.Relay.Writer.BatchTimeout = c.Kafka.BatchTimeout
		c.Relay.Writer.WriteTimeout = c.Kafka.WriteTimeout
		if len(r.errs) == 0 {
			// A backstop: the checks above mirror relay.Config.Validate
			// with key names, so this only fires if the two drift apart.
			if err := c.Relay.Validate(); err != nil {
				r.errs = append(r.errs, fmt.Errorf("config: %w", err))
			}
		}
		return c
	})
}

// NewAdmin registers the flags of a database-only command on fs (--config,
// --dsn, db.* and log.*) and returns its Loader.
func NewAdmin(fs *pflag.FlagSet) *Loader[Admin] {
	keys := concat(dbKeys(""), logKeys())
	return newLoader(fs, keys, func(r *reader) Admin {
		return Admin{DB: r.db(), Log: r.log()}
	})
}

func concat(groups ...[]key) []key {
	var out []key
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func (r *reader) relay() relay.Config {
	c := relay.Config{
		Shards:          r.integer("relay.shards", 1, 4096),
		BatchSize:       r.integer("relay.batch_size", 1, 10000),
		BatchBytes:      int64(r.integer("relay.batch_bytes", 1, 1<<30)),
		Concurrency:     r.integer("relay.concurrency", 1, 1024),
		PollMin:         r.duration("relay.poll_min", 0),
		PollMax:         r.duration("relay.poll_max", 0),
		LeaseTTL:        r.duration("relay.lease_ttl", time.Second),
		Heartbeat:       r.duration("relay.heartbeat", 0),
		RetryInitial:    r.duration("relay.retry_initial", time.Millisecond),
		RetryMax:        r.duration("relay.retry_max", time.Millisecond),
		MaxAttempts:     r.integer("relay.max_attempts", 1, 1000),
		Retention:       r.duration("relay.retention", 0),
		PurgeSchedule:   r.str("relay.purge_schedule"),
		PurgeBatch:      r.integer("relay.purge_batch", 1, 100000),
		BacklogInterval: r.duration("relay.backlog_interval", 10*time.Millisecond),
		ShutdownTimeout: r.duration("relay.shutdown_timeout", time.Millisecond),
		Owner:           r.str("relay.owner"),
	}
	if c.PollMax != 0 && c.PollMax < c.PollMin {
		r.fail("relay.poll_max", c.PollMax.String(), "want at least relay.poll_min ("+c.PollMin.String()+")")
	}
	if c.Heartbeat > c.LeaseTTL/2 {
		r.fail("relay.heartbeat", c.Heartbeat.String(), "want at most relay.lease_ttl/2 ("+(c.LeaseTTL/2).String()+"), or 0 for lease_ttl/3")
	}
	if c.RetryMax < c.RetryInitial {
		r.fail("relay.retry_max", c.RetryMax.String(), "want at least relay.retry_initial ("+c.RetryInitial.String()+")")
	}
	r.cronSpec("relay.purge_schedule", c.PurgeSchedule)
	if len(c.Owner) > 128 {
		r.fail("relay.owner", c.Owner, "want at most 128 characters")
	}
	return c
}
