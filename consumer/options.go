package consumer

import (
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/backoff"
	"github.com/txmsg/txmsg/internal/kafkax"
)

// Option configures a Consumer; New validates all options together.
type Option func(*options) error

type options struct {
	logger         *slog.Logger
	metrics        hooks
	db             *sql.DB
	retention      time.Duration
	purgeEvery     time.Duration
	purgeBatch     int
	concurrency    int
	maxAttempts    int
	backoff        backoff.Policy
	dlqTopic       string
	drainTimeout   time.Duration
	commitInterval time.Duration
	ratePerSecond  float64
	rateBurst      int
	balancers      []kafka.GroupBalancer
	strategy       string
	balancerConfig BalancerConfig
	session        time.Duration
	heartbeat      time.Duration
	rebalance      time.Duration
	joinBackoff    time.Duration
	// in-flight limits per partition (WithInFlightLimit)
	inFlightMessages int
	inFlightBytes    int64
	retryTiers       []time.Duration
	security         kafkax.Security
	now              func() time.Time
}

func defaultOptions() options {
	return options{
		logger:           slog.New(slog.DiscardHandler),
		retention:        7 * 24 * time.Hour,
		purgeEvery:       time.Hour,
		purgeBatch:       1000,
		concurrency:      1,
		maxAttempts:      5,
		backoff:          backoff.Policy{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Factor: 2},
		drainTimeout:     20 * time.Second,
		commitInterval:   100 * time.Millisecond,
		inFlightMessages: 10000,
		inFlightBytes:    64 << 20,
		now:              func() time.Time { return time.Now().UTC() },
	}
}

// WithLogger sets the logger (default: discard). Attribute keys are msg_id,
// topic, partition and attempt.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("WithLogger: nil logger")
		}
		o.logger = l
		return nil
	}
}

// WithHooks adds measurement hooks (default: none); see Hook.
func WithHooks(hs ...Hook) Option {
	return func(o *options) error {
		for _, h := range hs {
			if h == nil {
				return fmt.Errorf("WithHooks: nil Hook")
			}
		}
		o.metrics = append(o.metrics, hs...)
		return nil
	}
}

// WithInbox sets the database holding the inbox table, which TxHandlerFunc
// needs (default: none, and Run rejects a TxHandlerFunc).
func WithInbox(db *sql.DB) Option {
	return func(o *options) error {
		if db == nil {
			return fmt.Errorf("WithInbox: nil *sql.DB")
		}
		o.db = db
		return nil
	}
}

// MaxPurgeBatch is the most inbox rows one purge statement deletes: it
// names each row's key, and a statement takes at most 65,535 parameters.
const MaxPurgeBatch = 10000

// WithInboxRetention sets how long inbox rows are kept (default 7 days) and
// how often Run purges older rows of this group (default every hour), in
// batches of batch rows (default 1000, at most MaxPurgeBatch). Retention must outlast any
// redelivery: a duplicate that arrives after its row was purged is
// processed again. A retention of 0 disables the purge.
func WithInboxRetention(retention, every time.Duration, batch int) Option {
	return func(o *options) error {
		if retention < 0 {
			return fmt.Errorf("WithInboxRetention: negative retention %v", retention)
		}
		if retention > 0 && every <= 0 {
			return fmt.Errorf("WithInboxRetention: purge interval %v, want > 0", every)
		}
		if batch <= 0 || batch > MaxPurgeBatch {
			return fmt.Errorf("WithInboxRetention: batch %d, want 1 to %d", batch, MaxPurgeBatch)
		}
		o.retention, o.purgeEvery, o.purgeBatch = retention, every, batch
		return nil
	}
}

// WithConcurrency sets how many messages of one partition may be handled at
// once (default 1: each partition in order). Messages of one key always go
// to the same worker, so they are handled one at a time and in order.
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 || n > 1024 {
			return fmt.Errorf("WithConcurrency: %d, want 1..1024", n)
		}
		o.concurrency = n
		return nil
	}
}

// WithMaxAttempts sets how many times a message is handled before it goes to
// the dead-letter topic (default 5; 1 means no retry).
func WithMaxAttempts(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("WithMaxAttempts: %d, want >= 1", n)
		}
		o.maxAttempts = n
		return nil
	}
}

// WithBackoff sets the delay between attempts: initial, doubling, capped at
// max, with jitter (default 100ms to 10s).
func WithBackoff(initial, max time.Duration) Option {
	return func(o *options) error {
		if initial <= 0 || max < initial {
			return fmt.Errorf("WithBackoff: initial %v, max %v: want 0 < initial <= max", initial, max)
		}
		o.backoff = backoff.Policy{Initial: initial, Max: max, Factor: 2}
		return nil
	}
}

// WithDeadLetterTopic sends every dead letter to topic instead of the
// default "<topic>.<group>.dlq" of the message's own topic.
func WithDeadLetterTopic(topic string) Option {
	return func(o *options) error {
		o.dlqTopic = topic
		return nil
	}
}

// WithDrainTimeout bounds how long Run waits for in-flight handlers after
// its context is done, or their partition revoked, before it cancels their
// context (default 20s: under the default 30s rebalance timeout, with room
// for the heartbeat that brings the rebalance and the final commit; a
// member that drains past the rebalance timeout misses the rebalance, its
// final commit is refused and its finished work is done again).
func WithDrainTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithDrainTimeout: %v, want > 0", d)
		}
		o.drainTimeout = d
		return nil
	}
}

// WithCommitInterval sets how often finished offsets are committed (default
// 100ms). Commits never run ahead of processing; a longer interval means
// fewer commit requests and more redelivery after a crash.
func WithCommitInterval(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithCommitInterval: %v, want > 0", d)
		}
		o.commitInterval = d
		return nil
	}
}

// WithRateLimit caps handled messages per second with a token bucket of
// burst (default: unlimited). SetRateLimit changes it while running.
func WithRateLimit(perSecond float64, burst int) Option {
	return func(o *options) error {
		if perSecond < 0 || burst < 0 {
			return fmt.Errorf("WithRateLimit: %v/s burst %d, want >= 0", perSecond, burst)
		}
		o.ratePerSecond, o.rateBurst = perSecond, burst
		return nil
	}
}

// WithBalancers sets the group balancers offered to the coordinator, in
// priority order (default: the "average" strategy, kafka-go's
// RangeGroupBalancer).
func WithBalancers(bs ...kafka.GroupBalancer) Option {
	return func(o *options) error {
		for i, b := range bs {
			if b == nil {
				return fmt.Errorf("WithBalancers: balancer %d is nil", i)
			}
		}
		o.balancers = bs
		return nil
	}
}

// WithStrategy selects the allocation strategy by name, as a config file
// does: "average", "round-robin", "consistent-hash", "static" or "rack" (see
// BalancerByName). It replaces WithBalancers.
func WithStrategy(name string, cfg BalancerConfig) Option {
	return func(o *options) error {
		o.strategy = name
		o.balancerConfig = cfg
		return nil
	}
}

// WithGroupTimeouts sets the group membership timings: session timeout
// (default 30s), heartbeat interval (default 3s), rebalance timeout (default
// 30s) and the backoff before rejoining (default 5s). Short values make
// rebalances fast; tests use a few seconds. A member waits for a join up to
// session + rebalance + 5s, and for a heartbeat, an offset commit or the
// leave at shutdown up to session + 5s (see kafkax.NewConsumerGroup).
func WithGroupTimeouts(session, heartbeat, rebalance, joinBackoff time.Duration) Option {
	return func(o *options) error {
		if session <= 0 || heartbeat <= 0 || rebalance <= 0 || joinBackoff <= 0 {
			return fmt.Errorf("WithGroupTimeouts: all timeouts must be > 0")
		}
		if heartbeat >= session {
			return fmt.Errorf("WithGroupTimeouts: heartbeat %v must be shorter than session %v", heartbeat, session)
		}
		o.session, o.heartbeat, o.rebalance, o.joinBackoff = session, heartbeat, rebalance, joinBackoff
		return nil
	}
}

// WithClock sets the clock for inbox timestamps (default time.Now in UTC).
func WithClock(now func() time.Time) Option {
	return func(o *options) error {
		if now == nil {
			return fmt.Errorf("WithClock: nil clock")
		}
		o.now = now
		return nil
	}
}

// WithRetryTiers adds RocketMQ-style retry topics with delays, for handlers
// that prefer not to block a key while a message is retried (default:
// none). A message whose in-place attempts (WithMaxAttempts, per delivery)
// all fail is written to "<topic>.<group>.retry-1", handled again after
// delays[0], then moves to tier 2, and so on; after the last tier it goes to
// the dead-letter topic. Retried messages keep their id, so the inbox still
// dedupes them, but they give up order: later messages of the key are
// handled meanwhile. The retry topics are created by Run with the origin
// topic's partitions, and read by the group "<group>.retry". At most 18
// tiers, each delay > 0.
func WithRetryTiers(delays ...time.Duration) Option {
	return func(o *options) error {
		if len(delays) > 18 {
			return fmt.Errorf("WithRetryTiers: %d tiers, at most 18", len(delays))
		}
		for i, d := range delays {
			if d <= 0 {
				return fmt.Errorf("WithRetryTiers: tier %d delay %v, want > 0", i+1, d)
			}
		}
		o.retryTiers = append([]time.Duration(nil), delays...)
		return nil
	}
}

// WithInFlightLimit bounds each partition's in-flight work: its oldest
// unfinished message and every message fetched after it, finished or not
// (their offsets cannot be committed before it), to at most messages
// messages and bytes bytes of keys, values and headers (default 10000
// messages, 64 MiB). At the limit the partition stops fetching until its
// oldest message finishes, so a key stuck in retries holds back at most
// this much of its partition, and memory stays bounded however long it
// stays stuck; other partitions go on. A single message bigger than bytes
// is still fetched, alone. Each partition's reader also prefetches up to
// 100 messages beyond this.
func WithInFlightLimit(messages int, bytes int64) Option {
	return func(o *options) error {
		if messages < 1 || bytes < 1 {
			return fmt.Errorf("WithInFlightLimit: %d messages, %d bytes: want both >= 1", messages, bytes)
		}
		o.inFlightMessages, o.inFlightBytes = messages, bytes
		return nil
	}
}
