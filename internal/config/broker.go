package config

import (
	"github.com/spf13/pflag"

	"github.com/txmsg/txmsg/broker"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/setting"
)

// Broker is the configuration of `txmsg broker`: the half-message API, the
// check-back scanner and the relay engine delivering committed messages.
type Broker struct {
	DB    DB
	Kafka kafkax.Config
	// Broker holds broker.* and checkback.*; Broker.Relay holds relay.*.
	Broker broker.Config
	// Auth holds what the loader reads into Broker's authentication.
	Auth    BrokerAuth
	Metrics Metrics
	Log     Log
}

// DefaultBroker returns the broker's defaults, from the packages each
// section configures.
func DefaultBroker() Broker {
	return Broker{DB: defaultDB(), Kafka: kafkax.DefaultConfig(), Broker: broker.DefaultConfig(),
		Metrics: Metrics{Listen: DefaultBrokerMetricsListen}, Log: defaultLog()}
}

// NewBroker registers the broker's flags on fs (--config, --dsn, --brokers,
// --listen and one flag per key, named after it) and returns its Loader.
func NewBroker(fs *pflag.FlagSet) *Loader[Broker] {
	return newLoader(fs, DefaultBroker(), func(c *Broker) error {
		var p setting.Problems
		p.Join(c.DB.resolve())
		p.Join(c.Auth.resolve(&c.Broker))
		c.Broker.Relay = withKafka(c.Broker.Relay, c.Kafka, &p)
		p.Join(c.Broker.Validate())
		p.Join(c.Metrics.Validate())
		p.Join(c.Log.resolve())
		c.Broker = c.Broker.WithDefaults()
		return p.Err()
	})
}
