package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg/relay"
)

func TestBrokerConfigValidate(t *testing.T) {
	t.Parallel()
	raw := Config{OperatorToken: testOperatorToken, Relay: relay.Config{Brokers: []string{"127.0.0.1:9092"}}}
	if err := raw.Validate(); err == nil {
		t.Fatal("Validate accepted a Config without defaults")
	}
	c := raw.WithDefaults()
	if raw.Listen != "" || raw.Relay.Shards != 0 {
		t.Fatalf("WithDefaults changed its receiver: %+v", raw)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7070" || c.MaxConcurrentRequests != DefaultMaxConcurrentRequests ||
		c.MaxPreparedPerGroup != DefaultMaxPreparedPerGroup || c.CheckTimeout != 6*time.Second || c.MaxChecks != 15 || c.ScanSchedule != "@every 1s" ||
		c.Concurrency != 64 || c.CallTimeout != 3*time.Second || c.MaxInterval != 5*time.Minute ||
		c.MaxBodyBytes != DefaultMaxBodyBytes || c.Relay.Retention != 24*time.Hour || c.Relay.PollMax != 50*time.Millisecond ||
		c.Relay.Shards != 16 || c.Relay.Owner == "" {
		t.Fatalf("defaults: %+v", c)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"max checks", func(c *Config) { c.MaxChecks = -1 }, "checkback.max_checks: -1: want 1 to 1000"},
		{"check timeout", func(c *Config) { c.CheckTimeout = 48 * time.Hour }, `checkback.timeout: "48h": want 1ms to 24h`},
		{"schedule", func(c *Config) { c.ScanSchedule = "often" }, `checkback.scan: "often"`},
		{"concurrency", func(c *Config) { c.Concurrency = 5000 }, "checkback.concurrency: 5000"},
		{"body", func(c *Config) { c.MaxBodyBytes = 10 }, "broker.max_body_bytes: 10"},
		{"value", func(c *Config) { c.MaxValueBytes = 8 << 20 }, "broker.max_value_bytes: 8388608: want at most broker.max_body_bytes (2097152)"},
		{"listen", func(c *Config) { c.Listen = "7070" }, `broker.listen: "7070": want HOST:PORT`},
		{"brokers", func(c *Config) { c.Relay.Brokers = nil }, "kafka.brokers"},
		{"relay", func(c *Config) { c.Relay.Shards = 5000 }, "relay.shards: 5000"},
		{"no token", func(c *Config) { c.OperatorToken = "" }, "openssl rand -hex 32"},
		{"short token", func(c *Config) { c.OperatorToken = "secret" }, "want at least 16"},
		{"token and disabled", func(c *Config) { c.AuthDisabled = true }, "choose one"},
		{"key without cert", func(c *Config) { c.TLSKeyFile = "key.pem" }, "set broker.tls.cert_file and key_file both"},
		{"client CA without TLS", func(c *Config) { c.TLSClientCAFile = "ca.pem" }, "mutual TLS"},
		{"allow hosts", func(c *Config) { c.CheckbackPolicy.AllowHosts = []string{"bad host"} }, "allow_hosts"},
	} {
		c := raw.WithDefaults()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}
