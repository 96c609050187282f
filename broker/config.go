package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/setting"
	"github.com/txmsg/txmsg/relay"
)

// Config configures a Server (the `txmsg broker` daemon). DefaultConfig
// holds the defaults noted; WithDefaults fills the zero fields of a Config
// with them, and NewServer does so before it validates. The struct tags name
// each field's configuration key and describe it.
type Config struct {
	// Listen is the API's address (default "127.0.0.1:7070": this host
	// only; name an interface, or ":7070" for all, to serve others).
	Listen string `key:"broker.listen" flag:"listen" help:"HOST:PORT of the half-message HTTP API; ':7070' serves every interface"`
	// OperatorToken is the operator's API token, which may do everything
	// (broker.auth.operator_token, or the content of
	// broker.auth.operator_token_file); at least MinOperatorTokenLen
	// characters. Required unless AuthDisabled.
	OperatorToken string `key:"broker.auth.operator_token" help:"operator API token; prefer broker.auth.operator_token_file or env TXMSG_BROKER_AUTH_OPERATOR_TOKEN (flags show in ps)"`
	// AuthDisabled turns API authentication off (broker.auth.disabled):
	// anyone who reaches the API acts as the operator. For development
	// only; the broker warns at start and every minute.
	AuthDisabled bool `key:"broker.auth.disabled" help:"true turns API authentication off: development only"`
	// TLSCertFile and TLSKeyFile, PEM files, serve the API over TLS
	// (broker.tls.cert_file, broker.tls.key_file; default: plain HTTP).
	TLSCertFile string `key:"broker.tls.cert_file" help:"PEM certificate: serve the API over TLS"`
	TLSKeyFile  string `key:"broker.tls.key_file" help:"PEM private key of broker.tls.cert_file"`
	// TLSClientCAFile, a PEM file, also requires every client to present a
	// certificate that CA signed (broker.tls.client_ca_file; mutual TLS).
	TLSClientCAFile string `key:"broker.tls.client_ca_file" help:"PEM CA: require client certificates it signed (mutual TLS)"`
	// MaxConcurrentRequests bounds the API requests served at once; more
	// are answered 503 (broker.max_concurrent_requests, default 256).
	MaxConcurrentRequests int `key:"broker.max_concurrent_requests" help:"API requests served at once; more get 503"`
	// MaxPreparedPerGroup bounds one producer group's prepared messages; a
	// prepare past it is answered 429 (broker.max_prepared_per_group,
	// default 100000).
	MaxPreparedPerGroup int `key:"broker.max_prepared_per_group" help:"prepared messages per producer group; more get 429"`
	// CheckbackPolicy says which addresses check-backs may reach
	// (checkback.allow_loopback, checkback.allow_hosts; default: anything
	// but link-local, loopback, unspecified, multicast and broadcast).
	CheckbackPolicy AddressPolicy
	// MaxBodyBytes limits an API request body (default 2 MiB).
	MaxBodyBytes int64 `key:"broker.max_body_bytes" help:"largest API request body"`
	// MaxValueBytes limits a message's size as a Kafka record: value, key
	// and headers (default txmsg.DefaultMaxValueBytes, 1 MiB less 2 KiB).
	MaxValueBytes int `key:"broker.max_value_bytes" help:"largest message as a Kafka record (value, key, headers)"`
	// CheckTimeout is the delay from prepare to the first check-back, and the
	// start of the backoff between checks (checkback.timeout, default 6s);
	// a message may override it.
	CheckTimeout time.Duration `key:"checkback.timeout" help:"delay from prepare to the first check-back, and the first backoff"`
	// MaxChecks is how many check-backs a message gets before it is
	// discarded (checkback.max_checks, default 15); a message may override it.
	MaxChecks int `key:"checkback.max_checks" help:"check-backs before an unresolved message is discarded"`
	// MaxInterval caps the backoff between two checks of a message
	// (checkback.max_interval, default 5m).
	MaxInterval time.Duration `key:"checkback.max_interval" help:"longest backoff between two checks of a message"`
	// ScanSchedule is the cron spec of the check-back scan (checkback.scan,
	// default "@every 1s").
	ScanSchedule string `key:"checkback.scan" help:"cron spec of the scan for messages due a check-back"`
	// Concurrency is the most checks in flight per instance, alone or in
	// batch calls, and the size of a claim batch (checkback.concurrency,
	// default 64).
	Concurrency int `key:"checkback.concurrency" help:"most check-backs in flight, alone or in batches"`
	// CallTimeout bounds one check-back call (checkback.call_timeout,
	// default 3s).
	CallTimeout time.Duration `key:"checkback.call_timeout" help:"timeout of one check-back call"`
	// BacklogInterval is how often the prepared-backlog metric is refreshed
	// (default 5s).
	BacklogInterval time.Duration `key:"broker.backlog_interval" help:"how often the prepared-backlog metric is refreshed"`
	// ShutdownTimeout bounds how long Run waits for API requests in flight
	// after its context ends (default 10s). Below 5s a shutdown can time out
	// on a client's connection that never sent a request, which Go's HTTP
	// server waits 5s for.
	ShutdownTimeout time.Duration `key:"broker.shutdown_timeout" help:"how long shutdown waits for API requests in flight"`
	// Relay configures the engine that delivers committed messages; its
	// Shards is also the store's shard count. Its defaults are
	// relay.DefaultConfig's but for two: Retention, how long delivered and
	// rolled back messages are kept (so that a late repeated commit still
	// answers idempotently, and for inspection), is 24h; discarded messages
	// are never purged. PollMax is 50ms, how often the engine asks which
	// shards hold committed rows: it bounds commit → Kafka latency on an
	// idle shard.
	Relay relay.Config
}

// DefaultConfig returns the defaults of every field; Relay.Brokers stay
// empty.
func DefaultConfig() Config {
	sc := DefaultScannerConfig()
	c := Config{
		Listen:                "127.0.0.1:7070",
		MaxConcurrentRequests: DefaultMaxConcurrentRequests,
		MaxPreparedPerGroup:   DefaultMaxPreparedPerGroup,
		MaxBodyBytes:          DefaultMaxBodyBytes,
		MaxValueBytes:         txmsg.DefaultMaxValueBytes,
		CheckTimeout:          DefaultCheckTimeout,
		MaxChecks:             DefaultMaxChecks,
		MaxInterval:           sc.MaxInterval,
		ScanSchedule:          sc.Schedule,
		Concurrency:           sc.Concurrency,
		CallTimeout:           sc.CallTimeout,
		BacklogInterval:       5 * time.Second,
		ShutdownTimeout:       10 * time.Second,
		Relay:                 relay.DefaultConfig(),
	}
	c.Relay.Retention = 24 * time.Hour
	// A producer's or operator's commit wakes its shard; one decided by
	// check-back, or made through another broker, is noticed by the look
	// at which shards are busy, every PollMax (relay.Busy): keep it short.
	c.Relay.PollMax = 50 * time.Millisecond
	return c
}

// WithDefaults returns a copy of c whose zero fields, and those of c.Relay,
// hold DefaultConfig's values (then see relay.Config.WithDefaults). c is
// not changed.
func (c Config) WithDefaults() Config {
	setting.FillZero(&c, DefaultConfig())
	c.Relay = c.Relay.WithDefaults()
	return c
}

// Validate checks every field, c.Relay's too, without changing c, and names
// each bad one by its configuration key, as in "checkback.max_checks: 0:
// want 1 to 1000". Call WithDefaults first to fill a partial Config.
func (c Config) Validate() error {
	var p setting.Problems
	if !setting.ListenAddr(c.Listen) {
		p.Add("broker.listen", c.Listen, "want HOST:PORT (HOST may be empty for every interface, PORT 0 to 65535)")
	}
	p.Check(c.MaxBodyBytes >= 1024 && c.MaxBodyBytes <= 1<<30, "broker.max_body_bytes", c.MaxBodyBytes, "want 1024 to 1073741824")
	switch {
	case c.MaxValueBytes < 1 || c.MaxValueBytes > 1<<30:
		p.Add("broker.max_value_bytes", c.MaxValueBytes, "want 1 to 1073741824")
	case int64(c.MaxValueBytes) > c.MaxBodyBytes:
		p.Add("broker.max_value_bytes", c.MaxValueBytes, "want at most broker.max_body_bytes ("+setting.Show(c.MaxBodyBytes)+")")
	}
	p.Check(c.CheckTimeout >= time.Millisecond && c.CheckTimeout <= MaxCheckTimeout, "checkback.timeout", c.CheckTimeout,
		"want 1ms to "+setting.FormatDuration(MaxCheckTimeout))
	p.Check(c.MaxChecks >= 1 && c.MaxChecks <= MaxMaxChecks, "checkback.max_checks", c.MaxChecks, "want 1 to "+setting.Show(MaxMaxChecks))
	p.Check(c.BacklogInterval >= 10*time.Millisecond, "broker.backlog_interval", c.BacklogInterval, "want at least 10ms")
	p.Check(c.ShutdownTimeout >= time.Millisecond, "broker.shutdown_timeout", c.ShutdownTimeout, "want at least 1ms")
	c.validateSecurity(&p)
	p.Join(c.scanner().Validate())
	p.Join(c.Relay.Validate())
	return p.Err()
}

func (c Config) scanner() ScannerConfig {
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

func (c Config) validateSecurity(p *setting.Problems) {
	switch {
	case c.AuthDisabled && c.OperatorToken != "":
		p.Add("broker.auth.disabled", true, "an operator token is set too: choose one")
	case !c.AuthDisabled && c.OperatorToken == "":
		p.Join(ErrNoOperatorToken)
	case !c.AuthDisabled:
		p.Join(checkOperatorToken(c.OperatorToken))
	}
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		p.Add("broker.tls.key_file", c.TLSKeyFile, "set broker.tls.cert_file and key_file both, or neither")
	case c.TLSClientCAFile != "" && c.TLSCertFile == "":
		p.Add("broker.tls.client_ca_file", c.TLSClientCAFile, "needs broker.tls.cert_file and key_file: mutual TLS is TLS first")
	}
	p.Check(c.MaxConcurrentRequests >= 1 && c.MaxConcurrentRequests <= 1<<20, "broker.max_concurrent_requests",
		c.MaxConcurrentRequests, "want 1 to 1048576")
	p.Check(c.MaxPreparedPerGroup >= 1 && c.MaxPreparedPerGroup <= 1<<30, "broker.max_prepared_per_group",
		c.MaxPreparedPerGroup, "want 1 to 1073741824")
}

// tlsConfig loads the API's certificate (and client CA) when TLS is
// configured; nil means plain HTTP.
func (c Config) tlsConfig() (*tls.Config, error) {
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
