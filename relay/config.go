package relay

import (
	"crypto/tls"
	"os"
	"strconv"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/setting"
)

// Config configures an Engine. DefaultConfig holds the defaults noted;
// WithDefaults fills the zero fields of a Config with them, and New does so
// before it validates. The struct tags name each field's configuration key
// (`txmsg relay` reads them) and describe it.
type Config struct {
	// Brokers are the Kafka bootstrap addresses, HOST:PORT. Required.
	Brokers []string
	// TLS, when set, encrypts the connections to Kafka (default: plaintext).
	TLS *tls.Config
	// SASL, when set, authenticates the connections to Kafka (default: none);
	// see github.com/segmentio/kafka-go/sasl/plain and sasl/scram.
	SASL sasl.Mechanism
	// Shards is how many shards rows are spread over (default 16). It must
	// equal the producers' outbox.WithShards and the broker's shard count.
	Shards int `key:"relay.shards" help:"number of shards; must equal the producers' outbox shards"`
	// BatchSize is the most rows read and published per shard per round
	// (default 1000), and the most rows of a shard waiting for their mark.
	BatchSize int `key:"relay.batch_size" help:"most rows read and published per shard per round"`
	// BatchBytes caps the keys and values read per round (default 4 MiB):
	// a round stops after the row that reaches it.
	BatchBytes int64 `key:"relay.batch_bytes" help:"most bytes of keys and values read per round"`
	// Concurrency is the most shards publishing a round at once (default
	// 16). Memory in flight stays below about Concurrency × BatchBytes. On a
	// small database server fewer (4) drains a backlog faster, at the cost
	// of latency under a steady trickle.
	Concurrency int `key:"relay.concurrency" help:"most shards publishing a round at once"`
	// PollMin is the wait after a round that found some rows but not a full
	// batch, and how often new rows are looked for to wake their shard
	// (default 2ms); a full batch polls again at once.
	PollMin time.Duration `key:"relay.poll_min" help:"wait after a partial round; how often new rows are looked for"`
	// PollMax caps the wait when a shard is idle: it doubles from PollMin on
	// each empty round (default 250ms; broker.DefaultConfig has 50ms).
	PollMax time.Duration `key:"relay.poll_max" help:"longest wait when a shard is idle; 0 means the default"`
	// LeaseTTL is how long a shard lease lasts without renewal; a dead
	// engine's shards are taken over after it (default 10s).
	LeaseTTL time.Duration `key:"relay.lease_ttl" help:"shard lease lifetime; a dead relay's shards move after it"`
	// Heartbeat is how often leases are renewed and rebalanced; zero means
	// LeaseTTL/3 (default 0).
	Heartbeat time.Duration `key:"relay.heartbeat" help:"lease renewal interval; 0 means lease_ttl/3"`
	// RetryInitial and RetryMax bound the backoff between failed rounds,
	// and between attempts at a partition or message Kafka failed on
	// (defaults 100ms and 10s). Attempts at a topic Kafka refuses as a whole
	// (unknown, not authorized) are about RetryMax apart: only an operator
	// can fix it, so its attempts span seconds.
	RetryInitial time.Duration `key:"relay.retry_initial" help:"first backoff after a failed round"`
	RetryMax     time.Duration `key:"relay.retry_max" help:"longest backoff after failed rounds"`
	// MaxAttempts is how often a message Kafka refuses for good (too large,
	// invalid, or to a topic that is unknown and not created, or not
	// authorized) is tried before it is dead-lettered (default 3).
	MaxAttempts int `key:"relay.max_attempts" help:"attempts before a message Kafka refuses is dead-lettered"`
	// Retention keeps delivered rows this long (marked delivered_at) for
	// auditing; zero deletes them on delivery (default 0).
	Retention time.Duration `key:"relay.retention" help:"keep delivered rows this long; 0 takes the default (the relay's: delete on delivery)"`
	// PurgeSchedule is the cron spec of the purge job (default "@every 1m").
	PurgeSchedule string `key:"relay.purge_schedule" help:"cron spec of the retention purge"`
	// PurgeBatch is the most rows one purge statement deletes (default 1000).
	PurgeBatch int `key:"relay.purge_batch" help:"most rows one purge statement deletes"`
	// BacklogInterval is how often pending-row metrics are refreshed
	// (default 5s).
	BacklogInterval time.Duration `key:"relay.backlog_interval" help:"how often pending-row metrics are refreshed"`
	// ShutdownTimeout bounds how long Run waits for in-flight rounds to be
	// marked after its context ends (default 10s). A produce request under
	// way is never cut short: it ends with its answer or by the round's
	// deadline, at most LeaseTTL-Heartbeat away.
	ShutdownTimeout time.Duration `key:"relay.shutdown_timeout" help:"how long shutdown waits for in-flight rounds to be marked"`
	// Owner names this engine in the lease table; empty means
	// DefaultOwner() (default "").
	Owner string `key:"relay.owner" help:"this instance's name in the lease table; empty means host-pid-random"`
	// Writer tunes produce requests; the engine uses three fields.
	// WriteTimeout bounds one request (default 10s). BatchBytes is the
	// largest message sent, headers included (default 16 MiB; bigger ones
	// are dead-lettered), and, up to 1 MiB, the most one request carries.
	// Transport carries TLS and SASL (default: from TLS and SASL above).
	Writer kafkax.WriterConfig
}

// DefaultConfig returns the defaults of every field; Brokers stay empty.
func DefaultConfig() Config {
	return Config{
		Shards:          16,
		BatchSize:       1000,
		BatchBytes:      4 << 20,
		Concurrency:     16,
		PollMin:         2 * time.Millisecond,
		PollMax:         250 * time.Millisecond,
		LeaseTTL:        10 * time.Second,
		RetryInitial:    100 * time.Millisecond,
		RetryMax:        10 * time.Second,
		MaxAttempts:     3,
		PurgeSchedule:   "@every 1m",
		PurgeBatch:      1000,
		BacklogInterval: 5 * time.Second,
		ShutdownTimeout: 10 * time.Second,
	}
}

// WithDefaults returns a copy of c whose zero fields hold DefaultConfig's
// values, Heartbeat LeaseTTL/3 and Owner DefaultOwner(). c is not changed.
func (c Config) WithDefaults() Config {
	setting.FillZero(&c, DefaultConfig())
	return c.withDerived()
}

// withDerived fills the fields whose default depends on others.
func (c Config) withDerived() Config {
	if c.Heartbeat == 0 {
		c.Heartbeat = c.LeaseTTL / 3
	}
	if c.Owner == "" {
		c.Owner = DefaultOwner()
	}
	return c
}

// Validate checks every field without changing c, and names each bad one by
// its configuration key, as in "relay.batch_size: -1: want 1 to 10000".
// Zero is valid only where a field documents a meaning for it (PollMin,
// PollMax, Heartbeat, Retention, Owner): call WithDefaults first to fill a
// partial Config.
func (c Config) Validate() error {
	var p setting.Problems
	if err := kafkax.CheckBrokers(c.Brokers); err != nil {
		p.Add("kafka.brokers", c.Brokers, err.Error())
	}
	p.Check(c.Shards >= 1 && c.Shards <= 4096, "relay.shards", c.Shards, "want 1 to 4096")
	p.Check(c.BatchSize >= 1 && c.BatchSize <= 10000, "relay.batch_size", c.BatchSize, "want 1 to 10000")
	p.Check(c.BatchBytes >= 1 && c.BatchBytes <= 1<<30, "relay.batch_bytes", c.BatchBytes, "want 1 to 1073741824")
	p.Check(c.Concurrency >= 1 && c.Concurrency <= 1024, "relay.concurrency", c.Concurrency, "want 1 to 1024")
	p.Check(c.PollMin >= 0, "relay.poll_min", c.PollMin, "want at least 0s")
	switch {
	case c.PollMax < 0:
		p.Add("relay.poll_max", c.PollMax, "want at least 0s")
	case c.PollMax != 0 && c.PollMax < c.PollMin:
		p.Add("relay.poll_max", c.PollMax, "want at least relay.poll_min ("+setting.FormatDuration(c.PollMin)+")")
	case c.PollMax == 0 && c.PollMin > DefaultConfig().PollMax:
		p.Add("relay.poll_min", c.PollMin, "want at most relay.poll_max ("+setting.FormatDuration(DefaultConfig().PollMax)+
			" by default): raise relay.poll_max too")
	}
	p.Check(c.LeaseTTL >= time.Second, "relay.lease_ttl", c.LeaseTTL, "want at least 1s")
	p.Check(c.Heartbeat >= 0 && c.Heartbeat <= c.LeaseTTL/2, "relay.heartbeat", c.Heartbeat,
		"want at most relay.lease_ttl/2 ("+setting.FormatDuration(c.LeaseTTL/2)+"), or 0 for lease_ttl/3")
	p.Check(c.RetryInitial >= time.Millisecond, "relay.retry_initial", c.RetryInitial, "want at least 1ms")
	p.Check(c.RetryMax >= c.RetryInitial, "relay.retry_max", c.RetryMax,
		"want at least relay.retry_initial ("+setting.FormatDuration(c.RetryInitial)+")")
	p.Check(c.MaxAttempts >= 1 && c.MaxAttempts <= 1000, "relay.max_attempts", c.MaxAttempts, "want 1 to 1000")
	p.Check(c.Retention >= 0, "relay.retention", c.Retention, "want 0 (delete on delivery) or more")
	if _, err := cron.ParseStandard(c.PurgeSchedule); err != nil {
		p.Add("relay.purge_schedule", c.PurgeSchedule, `want a cron spec such as "@every 1m" or "*/5 * * * *": `+err.Error())
	}
	p.Check(c.PurgeBatch >= 1 && c.PurgeBatch <= 100000, "relay.purge_batch", c.PurgeBatch, "want 1 to 100000")
	p.Check(c.BacklogInterval >= 10*time.Millisecond, "relay.backlog_interval", c.BacklogInterval, "want at least 10ms")
	p.Check(c.ShutdownTimeout >= time.Millisecond, "relay.shutdown_timeout", c.ShutdownTimeout, "want at least 1ms")
	p.Check(len(c.Owner) <= 128, "relay.owner", c.Owner, "want at most 128 characters")
	return p.Err()
}

// DefaultOwner names this process: host-pid-random.
func DefaultOwner() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "relay"
	}
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
}
