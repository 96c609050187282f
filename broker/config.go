package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/relay"
)

// Config configures a Server (the `txmsg broker` daemon). Zero fields take
// the defaults noted; Validate fills them in and names the first bad field.
type Config struct {
	// Listen is the API's address (default "127.0.0.1:7070": this host
	// only; name an interface, or ":7070" for all, to serve others).
	Listen string
	// OperatorToken is the operator's API token, which may do everything
	// (broker.auth.operator_token, or the content of
	// broker.auth.operator_token_file); at least MinOperatorTokenLen
	// characters. Required unless AuthDisabled.
	OperatorToken string
	// AuthDisabled turns API authentication off (broker.auth.disabled):
	// anyone who reaches the API acts as the operator. For development
	// only; the broker warns at start and every minute.
	AuthDisabled bool
	// TLSCertFile and TLSKeyFile, PEM files, serve the API over TLS
	// (broker.tls.cert_file, broker.tls.key_file; default: plain HTTP).
	TLSCertFile string
	TLSKeyFile  string
	// TLSClientCAFile, a PEM file, also requires every client to present a
	// certificate that CA signed (broker.tls.client_ca_file; mutual TLS).
	TLSClientCAFile string
	// MaxConcurrentRequests bounds the API requests served at once; more
	// are answered 503 (broker.max_concurrent_requests, default 256).
	MaxConcurrentRequests int
	// MaxPreparedPerGroup bounds one producer group's prepared messages; a
	// prepare past it is answered 429 (broker.max_prepared_per_group,
	// default 100000).
	MaxPreparedPerGroup int
	// CheckbackPolicy says which addresses check-backs may reach
	// (checkback.allow_loopback, checkback.allow_hosts; default: anything
	// but link-local, loopback, unspecified, multicast and broadcast).
	CheckbackPolicy AddressPolicy
	// MaxBodyBytes limits an API request body (default 2 MiB).
	MaxBodyBytes int64
	// MaxValueBytes limits a message value (default 1 MiB).
	MaxValueBytes int
	// CheckTimeout is the delay from prepare to the first check-back, and the
	// start of the backoff between checks (checkback.timeout, default 6s);
	// a message may override it.
	CheckTimeout time.Duration
	// MaxChecks is how many check-backs a message gets before it is
	// discarded (checkback.max_checks, default 15); a message may override it.
	MaxChecks int
	// MaxInterval caps the backoff between two checks of a message
	// (checkback.max_interval, default 5m).
	MaxInterval time.Duration
	// ScanSchedule is the cron spec of the check-back scan (checkback.scan,
	// default "@every 1s").
	ScanSchedule string
	// Concurrency is the most check-back calls in flight per instance
	// (checkback.concurrency, default 16).
	Concurrency int
	// CallTimeout bounds one check-back call (checkback.call_timeout,
	// default 3s).
	CallTimeout time.Duration
	// BacklogInterval is how often the prepared-backlog metric is refreshed
	// (default 5s).
	BacklogInterval time.Duration
	// ShutdownTimeout bounds how long Run waits for API requests in flight
	// after its context ends (default 10s).
	ShutdownTimeout time.Duration
	// Relay configures the engine that delivers committed messages; its
	// Shards is also the store's shard count. Its Retention, how long
	// delivered and rolled back messages are kept (so that a late repeated
	// commit still answers idempotently, and for inspection), defaults to
	// 24h here; discarded messages are never purged. Its PollMax defaults
	// to 50ms here, which bounds commit → Kafka latency on an idle shard.
	Relay relay.Config
}

// Validate fills in defaults and checks every field, naming the bad one.
func (c *Config) Validate() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7070"
	}
	if c.MaxConcurrentRequests == 0 {
		c.MaxConcurrentRequests = DefaultMaxConcurrentRequests
	}
	if c.MaxPreparedPerGroup == 0 {
		c.MaxPreparedPerGroup = DefaultMaxPreparedPerGroup
	}
	if err := c.validateSecurity(); err != nil {
		return err
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = txmsg.DefaultMaxValueBytes
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = DefaultCheckTimeout
	}
	if c.MaxChecks == 0 {
		c.MaxChecks = DefaultMaxChecks
	}
	if c.BacklogInterval == 0 {
		c.BacklogInterval = 5 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	switch {
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("broker: max_body_bytes %d: want at least 1024", c.MaxBodyBytes)
	case c.MaxValueBytes < 1 || int64(c.MaxValueBytes) > c.MaxBodyBytes:
		return fmt.Errorf("broker: max_value_bytes %d: want 1 to max_body_bytes (%d)", c.MaxValueBytes, c.MaxBodyBytes)
	case c.CheckTimeout < time.Millisecond || c.CheckTimeout > MaxCheckTimeout:
		return fmt.Errorf("broker: checkback.timeout %v: want 1ms to %v", c.CheckTimeout, MaxCheckTimeout)
	case c.MaxChecks < 1 || c.MaxChecks > MaxMaxChecks:
		return fmt.Errorf("broker: checkback.max_checks %d: want 1 to %d", c.MaxChecks, MaxMaxChecks)
	case c.BacklogInterval <= 0:
		return errors.New("broker: backlog_interval: want more than 0")
	case c.ShutdownTimeout <= 0:
		return errors.New("broker: shutdown_timeout: want more than 0")
	}
	cb := c.scanner()
	if err := cb.Validate(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	c.ScanSchedule, c.Concurrency, c.CallTimeout, c.MaxInterval = cb.Schedule, cb.Concurrency, cb.CallTimeout, cb.MaxInterval
	if c.Relay.Retention == 0 {
		c.Relay.Retention = 24 * time.Hour
	}
	if c.Relay.PollMax == 0 {
		// A producer's or operator's commit wakes its shard; one decided
		// by check-back is noticed by polling: keep that wait short.
		c.Relay.PollMax = 50 * time.Millisecond
	}
	if err := c.Relay.Validate(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}

func (c *Config) scanner() ScannerConfig {
	return ScannerConfig{Schedule: c.ScanSchedule, Concurrency: c.Concurrency,
		CallTimeout: c.CallTimeout, MaxInterval: c.MaxInterval, Policy: c.CheckbackPolicy}
}

// ErrNoOperatorToken is returned by Config.Validate when the API has neither
// an operator token nor authentication disabled; its text says how to make
// one.
var ErrNoOperatorToken = errors.New("broker: no operator token: the API needs one. Create it with " +
	"'openssl rand -hex 32 > /etc/txmsg/operator-token' and set broker.auth.operator_token_file to that file " +
	"(or env TXMSG_BROKER_AUTH_OPERATOR_TOKEN), then register producer groups with 'txmsg group create'; " +
	"for development only, broker.auth.disabled: true turns authentication off")

func (c *Config) validateSecurity() error {
	switch {
	case c.AuthDisabled && c.OperatorToken != "":
		return errors.New("broker: broker.auth.disabled is true and an operator token is set: choose one")
	case !c.AuthDisabled && c.OperatorToken == "":
		return ErrNoOperatorToken
	case !c.AuthDisabled:
		if err := checkOperatorToken(c.OperatorToken); err != nil {
			return err
		}
	}
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return errors.New("broker: broker.tls.cert_file and broker.tls.key_file: set both or neither")
	case c.TLSClientCAFile != "" && c.TLSCertFile == "":
		return errors.New("broker: broker.tls.client_ca_file needs broker.tls.cert_file and key_file: mutual TLS is TLS first")
	case c.MaxConcurrentRequests < 1:
		return fmt.Errorf("broker: max_concurrent_requests %d: want at least 1", c.MaxConcurrentRequests)
	case c.MaxPreparedPerGroup < 1:
		return fmt.Errorf("broker: max_prepared_per_group %d: want at least 1", c.MaxPreparedPerGroup)
	}
	return nil
}

// tlsConfig loads the API's certificate (and client CA) when TLS is
// configured; nil means plain HTTP.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if c.TLSCertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("broker: broker.tls.cert_file %s, key_file %s: %w", c.TLSCertFile, c.TLSKeyFile, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if c.TLSClientCAFile != "" {
		pem, err := os.ReadFile(c.TLSClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("broker: broker.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker: broker.tls.client_ca_file %s: no PEM certificate in it", c.TLSClientCAFile)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}
