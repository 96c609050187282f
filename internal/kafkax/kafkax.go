// Package kafkax is the one place txmsg builds kafka-go Writers, Readers and
// the relay's Producer, with the defaults the guarantees need instead of
// kafka-go's zero values (round-robin partitioner, fire-and-forget acks, 1 s
// batch timeout).
package kafkax

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// WriterConfig tunes a Writer; zero fields take the defaults noted.
type WriterConfig struct {
	// BatchTimeout bounds how long a partial batch waits (default 1ms).
	BatchTimeout time.Duration
	// BatchSize is the most messages per partition batch (default 1000).
	BatchSize int
	// BatchBytes is the most bytes per partition request (default 16 MiB);
	// a single bigger message fails with kafka.MessageTooLargeError.
	BatchBytes int64
	// WriteTimeout bounds one produce request (default 10s).
	WriteTimeout time.Duration
	// MaxAttempts is kafka-go's own retry count per batch (default 3).
	MaxAttempts int
	// Logger receives kafka-go's error log (default: discarded).
	Logger *slog.Logger
	// Transport carries the requests, with its TLS and SASL (see
	// NewTransport; default: kafka-go's shared DefaultTransport, plaintext).
	// The caller closes it after the Writer.
	Transport *kafka.Transport
}

// NewWriter returns a synchronous Writer with acks=all, the Murmur2 balancer
// (keys land where Java producers put them), auto topic creation allowed and
// a short batch timeout. The caller sets Message.Topic on every message.
func NewWriter(brokers []string, c WriterConfig) (*kafka.Writer, error) {
	if err := CheckBrokers(brokers); err != nil {
		return nil, err
	}
	if c.BatchTimeout <= 0 {
		c.BatchTimeout = DefaultBatchTimeout
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = 16 << 20
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	w := &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Balancer:               &kafka.Murmur2Balancer{},
		RequiredAcks:           kafka.RequireAll,
		Async:                  false,
		BatchTimeout:           c.BatchTimeout,
		BatchSize:              c.BatchSize,
		BatchBytes:             c.BatchBytes,
		WriteTimeout:           c.WriteTimeout,
		ReadTimeout:            c.WriteTimeout,
		MaxAttempts:            c.MaxAttempts,
		WriteBackoffMin:        50 * time.Millisecond,
		WriteBackoffMax:        time.Second,
		AllowAutoTopicCreation: true,
	}
	if c.Transport != nil {
		w.Transport = c.Transport
	}
	if c.Logger != nil {
		l := c.Logger
		w.ErrorLogger = kafka.LoggerFunc(func(msg string, args ...any) {
			l.Warn("kafka writer", slog.String("detail", fmt.Sprintf(msg, args...)))
		})
	}
	return w, nil
}

// CheckBrokers validates a broker list: at least one, each HOST:PORT.
func CheckBrokers(brokers []string) error {
	if len(brokers) == 0 {
		return errors.New("kafka: no brokers given")
	}
	for _, b := range brokers {
		if strings.TrimSpace(b) == "" {
			return errors.New("kafka: empty broker address")
		}
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("kafka: broker %q: want HOST:PORT: %w", b, err)
		}
	}
	return nil
}
