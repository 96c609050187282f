package config

import (
	"fmt"
	"net"
	"time"

	"github.com/spf13/pflag"

	"github.com/txmsg/txmsg/broker"
)

// Broker is the configuration of `txmsg broker`: the half-message API, the
// check-back scanner and the relay engine delivering committed messages.
type Broker struct {
	DB    DB
	Kafka Kafka
	// Broker holds broker.* and checkback.*; Broker.Relay holds relay.*.
	Broker  broker.Config
	Metrics Metrics
	Log     Log
}

func brokerKeys() []key {
	return []key{
		{"broker.listen", "listen", "127.0.0.1:7070", "HOST:PORT of the half-message HTTP API"},
		{"broker.max_body_bytes", "broker.max_body_bytes", "2097152", "largest API request body"},
		{"broker.max_value_bytes", "broker.max_value_bytes", "1048576", "largest message value"},
		{"broker.backlog_interval", "broker.backlog_interval", "5s", "how often the prepared-backlog metric is refreshed"},
		{"broker.shutdown_timeout", "broker.shutdown_timeout", "10s", "how long shutdown waits for API requests in flight"},
		{"checkback.timeout", "checkback.timeout", "6s", "delay from prepare to the first check-back, and the first backoff"},
		{"checkback.max_checks", "checkback.max_checks", "15", "check-backs before an unresolved message is discarded"},
		{"checkback.max_interval", "checkback.max_interval", "5m", "longest backoff between two checks of a message"},
		{"checkback.scan", "checkback.scan", "@every 1s", "cron spec of the scan for messages due a check-back"},
		{"checkback.concurrency", "checkback.concurrency", "16", "most check-back calls in flight"},
		{"checkback.call_timeout", "checkback.call_timeout", "3s", "timeout of one check-back call"},
	}
}

// NewBroker registers the broker's flags on fs (--config, --dsn, --brokers,
// --listen and one flag per key, named after it) and returns its Loader.
func NewBroker(fs *pflag.FlagSet) *Loader[Broker] {
	keys := concat(dbKeys(""), kafkaKeys(), brokerKeys(), brokerSecurityKeys(), relayKeys(), metricsKeys(DefaultBrokerMetricsListen), logKeys())
	return newLoader(fs, keys, func(r *reader) Broker {
		c := Broker{DB: r.db(), Kafka: r.kafka(), Broker: r.broker(), Metrics: r.metrics(), Log: r.log()}
		c.Broker.Relay = r.relay()
		c.Broker.Relay.Brokers = c.Kafka.Brokers
		c.Broker.Relay.Writer.BatchTimeout = c.Kafka.BatchTimeout
		c.Broker.Relay.Writer.WriteTimeout = c.Kafka.WriteTimeout
		if len(r.errs) == 0 {
			// A backstop: the checks above mirror broker.Config.Validate
			// with key names, so this only fires if the two drift apart.
			if err := c.Broker.Validate(); err != nil {
				r.errs = append(r.errs, fmt.Errorf("config: %w", err))
			}
		}
		return c
	})
}

func (r *reader) broker() broker.Config {
	c := broker.Config{
		Listen:          r.str("broker.listen"),
		MaxBodyBytes:    int64(r.integer("broker.max_body_bytes", 1024, 1<<30)),
		MaxValueBytes:   r.integer("broker.max_value_bytes", 1, 1<<30),
		BacklogInterval: r.duration("broker.backlog_interval", 10*time.Millisecond),
		ShutdownTimeout: r.duration("broker.shutdown_timeout", time.Millisecond),
		CheckTimeout:    r.duration("checkback.timeout", time.Millisecond),
		MaxChecks:       r.integer("checkback.max_checks", 1, broker.MaxMaxChecks),
		MaxInterval:     r.duration("checkback.max_interval", time.Millisecond),
		ScanSchedule:    r.str("checkback.scan"),
		Concurrency:     r.integer("checkback.concurrency", 1, 1024),
		CallTimeout:     r.duration("checkback.call_timeout", time.Millisecond),
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		r.fail("broker.listen", c.Listen, "want HOST:PORT (HOST may be empty for every interface)")
	}
	if int64(c.MaxValueBytes) > c.MaxBodyBytes {
		r.fail("broker.max_value_bytes", c.MaxValueBytes, fmt.Sprintf("want at most broker.max_body_bytes (%d)", c.MaxBodyBytes))
	}
	if c.CheckTimeout > broker.MaxCheckTimeout {
		r.fail("checkback.timeout", c.CheckTimeout.String(), "want at most "+broker.MaxCheckTimeout.String())
	}
	r.cronSpec("checkback.scan", c.ScanSchedule)
	r.brokerSecurity(&c)
	return c
}
