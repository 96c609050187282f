package kafkax

import (
	"strings"
	"time"

	"github.com/txmsg/txmsg/internal/setting"
)

// Defaults of the Writer settings the daemons expose as kafka.* keys.
const (
	DefaultBatchTimeout = time.Millisecond
	DefaultWriteTimeout = 10 * time.Second
)

// Config is how the daemons reach Kafka: the kafka.* settings. The struct
// tags name each field's configuration key and describe it.
type Config struct {
	// Brokers are the bootstrap addresses, HOST:PORT. Required.
	Brokers []string `key:"kafka.brokers" flag:"brokers" help:"Kafka bootstrap brokers, HOST:PORT[,HOST:PORT...]"`
	// DialTimeout bounds the reachability check at start-up (default 5s).
	DialTimeout time.Duration `key:"kafka.dial_timeout" help:"timeout of the broker reachability check at start-up"`
	// WriteTimeout bounds one produce request (default 10s).
	WriteTimeout time.Duration `key:"kafka.write_timeout" help:"timeout of one produce request"`
	// TLS encrypts the connections (default off).
	TLS TLSConfig
	// SASL authenticates the connections (default off).
	SASL SASLConfig
}

// DefaultConfig returns the defaults of every field; Brokers stay empty.
func DefaultConfig() Config {
	return Config{DialTimeout: 5 * time.Second, WriteTimeout: DefaultWriteTimeout}
}

// Validate checks every field without changing c or reading files (see
// Security), and names each bad one by its configuration key.
func (c Config) Validate() error {
	var p setting.Problems
	if len(c.Brokers) == 0 {
		p.Add("kafka.brokers", "", "required (flag --brokers, env TXMSG_KAFKA_BROKERS)")
	} else if err := CheckBrokers(c.Brokers); err != nil {
		p.Add("kafka.brokers", strings.Join(c.Brokers, ","), err.Error())
	}
	p.Check(c.DialTimeout >= time.Millisecond, "kafka.dial_timeout", c.DialTimeout, "want at least 1ms")
	p.Check(c.WriteTimeout >= time.Millisecond, "kafka.write_timeout", c.WriteTimeout, "want at least 1ms")
	c.TLS.validate(&p)
	c.SASL.validate(&p)
	return p.Err()
}
