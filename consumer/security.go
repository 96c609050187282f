package consumer

import (
	"crypto/tls"
	"errors"

	"github.com/segmentio/kafka-go/sasl"
)

// WithTLS encrypts every connection to Kafka with c (default: plaintext).
// Set c.RootCAs for brokers signed by a private CA.
func WithTLS(c *tls.Config) Option {
	return func(o *options) error {
		if c == nil {
			return errors.New("WithTLS: nil *tls.Config")
		}
		o.security.TLS = c
		return nil
	}
}

// WithSASL authenticates every connection to Kafka with m (default: none),
// for example plain.Mechanism{Username: u, Password: p} or
// scram.Mechanism(scram.SHA256, u, p) from github.com/segmentio/kafka-go/sasl.
func WithSASL(m sasl.Mechanism) Option {
	return func(o *options) error {
		if m == nil {
			return errors.New("WithSASL: nil sasl.Mechanism")
		}
		o.security.SASL = m
		return nil
	}
}
