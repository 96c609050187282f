package relay

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/txmsg/txmsg/internal/kafkax"
)

// Config configures an Engine. Zero fields take the defaults noted; Validate
// names the first bad field.
type Config struct {
	// Brokers are the Kafka bootstrap addresses, HOST:PORT. Required.
	Brokers []string
	// Shards is how many shards rows are spread over (default 16). It must
	// equal the producers' outbox.WithShards and the broker's shard count.
	Shards int
	// BatchSize is the most rows read and published per shard per round
	// (default 1000).
	BatchSize int
	// BatchBytes caps the keys and values read per round (default 4 MiB):
	// a round stops after the row that reaches it.
	BatchBytes int64
	// Concurrency is the most shards publishing a round at once (default
	// 16). Memory in flight stays below about Concurrency × BatchBytes. On a
	// small database server fewer (4) drains a backlog faster, at the cost
	// of latency under a steady trickle.
	Concurrency int
	// PollMin is the wait after a round that found some rows but not a full
	// batch, and how often new rows are looked for to wake their shard
	// (default 2ms); a full batch polls again at once.
	PollMin time.Duration
	// PollMax caps the wait when a shard is idle: it doubles from PollMin on
	// each empty round (default 250ms).
	PollMax time.Duration
	// LeaseTTL is how long a shard lease lasts without renewal; a dead
	// engine's shards are taken over after it (default 10s).
	LeaseTTL time.Duration
	// Heartbeat is how often leases are renewed and rebalanced (default
	// LeaseTTL/3).
	Heartbeat time.Duration
	// RetryInitial and RetryMax bound the backoff between failed rounds,
	// and between attempts at a partition or message Kafka failed on
	// (defaults 100ms and 10s). Attempts at a topic Kafka refuses as a whole
	// (unknown, not authorized) are about RetryMax apart: only an operator
	// can fix it, so its attempts span seconds.
	RetryInitial time.Duration
	RetryMax     time.Duration
	// MaxAttempts is how often a message Kafka refuses for good (too large,
	// invalid, or to a topic that is unknown and not created, or not
	// authorized) is tried before it is dead-lettered (default 3).
	MaxAttempts int
	// Retention keeps delivered rows this long (marked delivered_at) for
	// auditing; zero deletes them on delivery (default 0).
	Retention time.Duration
	// PurgeSchedule is the cron spec of the purge job (default "@every 1m").
	PurgeSchedule string
	// PurgeBatch is the most rows one purge statement deletes (default 1000).
	PurgeBatch int
	// BacklogInterval is how often pending-row metrics are refreshed
	// (default 5s).
	BacklogInterval time.Duration
	// ShutdownTimeout bounds how long Run waits for in-flight rounds to be
	// marked after its context ends (default 10s). A produce request under
	// way is never cut short: it ends with its answer or by the round's
	// deadline, at most LeaseTTL-Heartbeat away.
	ShutdownTimeout time.Duration
	// Owner names this engine in the lease table (default host-pid-random).
	Owner string
	// Writer tunes produce requests; the engine uses two fields.
	// WriteTimeout bounds one request (default 10s). BatchBytes is the
	// largest message sent, headers included (default 16 MiB; bigger ones
	// are dead-lettered), and, up to 1 MiB, the most one request carries.
	Writer kafkax.WriterConfig
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Shards == 0 {
		c.Shards = 16
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 4 << 20
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	def(&c.PollMin, 2*time.Millisecond)
	def(&c.PollMax, 250*time.Millisecond)
	def(&c.LeaseTTL, 10*time.Second)
	def(&c.Heartbeat, c.LeaseTTL/3)
	def(&c.RetryInitial, 100*time.Millisecond)
	def(&c.RetryMax, 10*time.Second)
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 3
	}
	if c.PurgeSchedule == "" {
		c.PurgeSchedule = "@every 1m"
	}
	if c.PurgeBatch == 0 {
		c.PurgeBatch = 1000
	}
	def(&c.BacklogInterval, 5*time.Second)
	def(&c.ShutdownTimeout, 10*time.Second)
	if c.Owner == "" {
		c.Owner = DefaultOwner()
	}
}

// Validate fills in defaults and checks every field, naming the bad one.
func (c *Config) Validate() error {
	c.setDefaults()
	if err := kafkax.CheckBrokers(c.Brokers); err != nil {
		return fmt.Errorf("relay: brokers: %w", err)
	}
	switch {
	case c.Shards < 1 || c.Shards > 4096:
		return fmt.Errorf("relay: shards %d: want 1 to 4096", c.Shards)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("relay: batch_size %d: want 1 to 10000", c.BatchSize)
	case c.BatchBytes < 1:
		return fmt.Errorf("relay: batch_bytes %d: want at least 1", c.BatchBytes)
	case c.Concurrency < 1 || c.Concurrency > 1024:
		return fmt.Errorf("relay: concurrency %d: want 1 to 1024", c.Concurrency)
	case c.PollMin < 0 || c.PollMax < c.PollMin:
		return fmt.Errorf("relay: poll_min %v, poll_max %v: want 0 <= poll_min <= poll_max", c.PollMin, c.PollMax)
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("relay: lease_ttl %v: want at least 1s", c.LeaseTTL)
	case c.Heartbeat <= 0 || c.Heartbeat > c.LeaseTTL/2:
		return fmt.Errorf("relay: heartbeat %v: want more than 0 and at most lease_ttl/2 (%v)", c.Heartbeat, c.LeaseTTL/2)
	case c.RetryInitial <= 0 || c.RetryMax < c.RetryInitial:
		return fmt.Errorf("relay: retry_initial %v, retry_max %v: want 0 < retry_initial <= retry_max", c.RetryInitial, c.RetryMax)
	case c.MaxAttempts < 1:
		return fmt.Errorf("relay: max_attempts %d: want at least 1", c.MaxAttempts)
	case c.Retention < 0:
		return fmt.Errorf("relay: retention %v: want 0 (delete on delivery) or more", c.Retention)
	case c.PurgeBatch < 1:
		return fmt.Errorf("relay: purge_batch %d: want at least 1", c.PurgeBatch)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("relay: shutdown_timeout %v: want more than 0", c.ShutdownTimeout)
	case len(c.Owner) > 128:
		return errors.New("relay: owner: longer than 128 characters")
	}
	return nil
}

// DefaultOwner names this process: host-pid-random.
func DefaultOwner() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "relay"
	}
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
}
