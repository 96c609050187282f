// Package txmsgprom exports txmsg's measurements to Prometheus: Relay,
// Broker and Consumer implement every hook of packages relay, broker and
// consumer with collectors named txmsg_*, registered on the Registerer you
// pass. A service using the consumer SDK registers its own:
//
//	m, err := txmsgprom.NewConsumer(prometheus.DefaultRegisterer)
//	…
//	c, err := consumer.New(brokers, "billing", topics, consumer.WithHooks(m))
//
// It is the only txmsg package that imports the Prometheus client; the SDK
// and engine packages report through small hook interfaces, so a service
// that does not import txmsgprom does not link Prometheus.
package txmsgprom
