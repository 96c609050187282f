package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg/relay"
)

func TestBrokerConfigValidate(t *testing.T) {
	t.Parallel()
	c := Config{OperatorToken: testOperatorToken, Relay: relay.Config{Brokers: []string{"127.0.0.1:9092"}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7070" || c.MaxConcurrentRequests != DefaultMaxConcurrentRequests ||
		c.MaxPreparedPerGroup != DefaultMaxPreparedPerGroup || c.CheckTimeout != 6*time.Second || c.MaxChecks != 15 || c.ScanSchedule != "@every 1s" ||
		c.Concurrency != 16 || c.CallTimeout != 3*time.Second || c.MaxInterval != 5*time.Minute ||
		c.MaxBodyBytes != DefaultMaxBodyBytes || c.Relay.Retention != 24*time.Hour || c.Relay.Shards != 16 {
		t.Fatalf("defaults: %+v", c)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"max checks", func(c *Config) { c.MaxChecks = -1 }, "max_checks"},
		{"check timeout", func(c *Config) { c.CheckTimeout = 48 * time.Hour }, "checkback.timeout"},
		{"schedule", func(c *Config) { c.ScanSchedule = "often" }, "schedule"},
		{"concurrency", func(c *Config) { c.Concurrency = 5000 }, "concurrency"},
		{"body", func(c *Config) { c.MaxBodyBytes = 10 }, "max_body_bytes"},
		{"value", func(c *Config) { c.MaxValueBytes = 8 << 20 }, "max_value_bytes"},
		{"brokers", func(c *Config) { c.Relay.Brokers = nil }, "brokers"},
		{"no token", func(c *Config) { c.OperatorToken = "" }, "openssl rand -hex 32"},
		{"short token", func(c *Config) { c.OperatorToken = "secret" }, "want at least 16"},
		{"token and disabled", func(c *Config) { c.AuthDisabled = true }, "choose one"},
		{"key without cert", func(c *Config) { c.TLSKeyFile = "key.pem" }, "set both"},
		{"client CA without TLS", func(c *Config) { c.TLSClientCAFile = "ca.pem" }, "mutual TLS"},
		{"allow hosts", func(c *Config) { c.CheckbackPolicy.AllowHosts = []string{"bad host"} }, "allow_hosts"},
	} {
		c := Config{OperatorToken: testOperatorToken, Relay: relay.Config{Brokers: []string{"127.0.0.1:9092"}}}
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}
