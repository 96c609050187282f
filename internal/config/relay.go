package config

import (
	"github.com/spf13/pflag"

	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/setting"
	"github.com/txmsg/txmsg/relay"
)

// Relay is the configuration of `txmsg relay`.
type Relay struct {
	DB      DB
	Kafka   kafkax.Config
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

// DefaultRelay returns the relay's defaults, from the packages each section
// configures.
func DefaultRelay() Relay {
	return Relay{DB: defaultDB(), Kafka: kafkax.DefaultConfig(), Relay: relay.DefaultConfig(),
		Metrics: Metrics{Listen: DefaultRelayMetricsListen}, Log: defaultLog()}
}

// NewRelay registers the relay's flags on fs (--config, --dsn, --brokers and
// one flag per key, named after it) and returns its Loader.
func NewRelay(fs *pflag.FlagSet) *Loader[Relay] {
	return newLoader(fs, DefaultRelay(), func(c *Relay) error {
		var p setting.Problems
		p.Join(c.DB.resolve())
		c.Relay = withKafka(c.Relay, c.Kafka, &p)
		p.Join(c.Relay.Validate())
		p.Join(c.Metrics.Validate())
		p.Join(c.Log.resolve())
		c.Relay = c.Relay.WithDefaults()
		return p.Err()
	})
}

// withKafka checks the kafka.* settings, reads the files they name, and
// copies what the relay engine uses into rc.
func withKafka(rc relay.Config, k kafkax.Config, p *setting.Problems) relay.Config {
	rc.Brokers = k.Brokers
	rc.Writer.WriteTimeout = k.WriteTimeout
	p.Join(k.Validate())
	sec, err := k.Security()
	p.Join(err)
	rc.TLS, rc.SASL = sec.TLS, sec.SASL
	return rc
}

// DefaultAdmin returns the defaults of the database-only commands.
func DefaultAdmin() Admin { return Admin{DB: defaultDB(), Log: defaultLog()} }

// NewAdmin registers the flags of a database-only command on fs (--config,
// --dsn, db.* and log.*) and returns its Loader.
func NewAdmin(fs *pflag.FlagSet) *Loader[Admin] {
	return newLoader(fs, DefaultAdmin(), func(c *Admin) error {
		var p setting.Problems
		p.Join(c.DB.resolve())
		p.Join(c.Log.resolve())
		return p.Err()
	})
}
