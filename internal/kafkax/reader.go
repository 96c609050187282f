package kafkax

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// ReaderConfig tunes a group Reader; zero fields take the defaults noted.
type ReaderConfig struct {
	// Group is the consumer group id (required).
	Group string
	// Topics are the topics the group reads (at least one).
	Topics []string
	// Balancers are offered to the coordinator in priority order (default:
	// kafka-go's range balancer). Every member of a group must offer at least
	// one balancer in common with the others.
	Balancers []kafka.GroupBalancer
	// HeartbeatInterval is how often the member heartbeats (default 3s).
	HeartbeatInterval time.Duration
	// SessionTimeout is how long the coordinator waits for a heartbeat before
	// it rebalances the member's partitions away (default 30s).
	SessionTimeout time.Duration
	// RebalanceTimeout is how long the coordinator waits for members to
	// rejoin during a rebalance (default 30s).
	RebalanceTimeout time.Duration
	// JoinGroupBackoff is the wait before rejoining after an error (default 5s).
	JoinGroupBackoff time.Duration
	// MaxWait bounds a fetch request's wait for new data (default 500ms).
	MaxWait time.Duration
	// QueueCapacity is the reader's internal message queue (default 1000).
	QueueCapacity int
	// MaxBytes bounds one fetch response (default 16 MiB).
	MaxBytes int
	// Logger receives kafka-go's error log (default: discarded).
	Logger *slog.Logger
	// Security protects and authenticates the reader's connections
	// (default: plaintext, no SASL).
	Security Security
}

// NewGroupReader returns a consumer-group Reader that never commits on its
// own: CommitInterval is 0 (CommitMessages is synchronous) and callers must
// use FetchMessage, never ReadMessage, which commits before processing. A
// group without a committed offset starts at the first offset, so nothing
// published before the group's first start is skipped.
func NewGroupReader(brokers []string, c ReaderConfig) (*kafka.Reader, error) {
	if err := c.checkGroup(brokers); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	rc := c.fetchConfig(brokers)
	rc.GroupID, rc.GroupTopics, rc.GroupBalancers = c.Group, append([]string(nil), c.Topics...), c.Balancers
	rc.HeartbeatInterval, rc.SessionTimeout = c.HeartbeatInterval, c.SessionTimeout
	rc.RebalanceTimeout, rc.JoinGroupBackoff = c.RebalanceTimeout, c.JoinGroupBackoff
	rc.CommitInterval, rc.StartOffset = 0, kafka.FirstOffset
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka: reader for group %s: %w", c.Group, err)
	}
	return kafka.NewReader(rc), nil
}

// fetchConfig is what every reader shares: c's fetch fields, committed
// records only (read_committed), short read backoffs, the logger and the
// TLS and SASL dialer. c must have its defaults.
func (c ReaderConfig) fetchConfig(brokers []string) kafka.ReaderConfig {
	rc := kafka.ReaderConfig{
		Brokers:         append([]string(nil), brokers...),
		MaxWait:         c.MaxWait,
		QueueCapacity:   c.QueueCapacity,
		MinBytes:        1,
		MaxBytes:        c.MaxBytes,
		ReadLagInterval: -1,
		ReadBackoffMin:  20 * time.Millisecond,
		ReadBackoffMax:  500 * time.Millisecond,
		IsolationLevel:  kafka.ReadCommitted,
		MaxAttempts:     3,
	}
	if c.Logger != nil {
		rc.ErrorLogger = errorLogger(c.Logger, "kafka reader")
	}
	if !c.Security.IsZero() {
		rc.Dialer = c.Security.dialer(10 * time.Second)
	}
	return rc
}

// withDefaults returns c with every zero field set to its default.
func (c ReaderConfig) withDefaults() ReaderConfig {
	if len(c.Balancers) == 0 {
		c.Balancers = []kafka.GroupBalancer{kafka.RangeGroupBalancer{}}
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 3 * time.Second
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 30 * time.Second
	}
	if c.RebalanceTimeout <= 0 {
		c.RebalanceTimeout = 30 * time.Second
	}
	if c.JoinGroupBackoff <= 0 {
		c.JoinGroupBackoff = 5 * time.Second
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 500 * time.Millisecond
	}
	if c.QueueCapacity <= 0 {
		c.QueueCapacity = 1000
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 16 << 20
	}
	return c
}

// checkGroup validates the brokers and the group fields of c.
func (c ReaderConfig) checkGroup(brokers []string) error {
	if err := CheckBrokers(brokers); err != nil {
		return err
	}
	if c.Group == "" {
		return errors.New("kafka: empty consumer group")
	}
	if len(c.Topics) == 0 {
		return errors.New("kafka: no topics to read")
	}
	for _, t := range c.Topics {
		if t == "" {
			return errors.New("kafka: empty topic name")
		}
	}
	return nil
}

// errorLogger adapts l to kafka-go's error log, as warnings tagged what.
func errorLogger(l *slog.Logger, what string) kafka.Logger {
	return kafka.LoggerFunc(func(msg string, args ...any) {
		l.Warn(what, slog.String("detail", fmt.Sprintf(msg, args...)))
	})
}
