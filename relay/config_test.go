package relay

import (
	"database/sql"
	"strings"
	"testing"
	"time"
)

func TestRelayConfigDefaultsAndValidation(t *testing.T) {
	c := Config{Brokers: []string{"127.0.0.1:9092"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Shards != 16 || c.BatchSize != 1000 || c.Concurrency != 16 || c.BatchBytes != 4<<20 || c.LeaseTTL != 10*time.Second || c.Heartbeat != c.LeaseTTL/3 || c.Owner == "" {
		t.Fatalf("defaults not applied: %+v", c)
	}
	tests := []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Brokers = nil }, "no brokers"},
		{func(c *Config) { c.Brokers = []string{"nohost"} }, `broker "nohost"`},
		{func(c *Config) { c.Shards = -1 }, "shards -1"},
		{func(c *Config) { c.BatchSize = 20000 }, "batch_size 20000"},
		{func(c *Config) { c.Concurrency = -1 }, "concurrency -1"},
		{func(c *Config) { c.PollMin, c.PollMax = time.Second, time.Millisecond }, "poll_min"},
		{func(c *Config) { c.LeaseTTL = time.Millisecond }, "lease_ttl"},
		{func(c *Config) { c.Heartbeat = 9 * time.Second }, "heartbeat"},
		{func(c *Config) { c.RetryInitial = -time.Second }, "retry_initial"},
		{func(c *Config) { c.MaxAttempts = -2 }, "max_attempts"},
		{func(c *Config) { c.Retention = -time.Hour }, "retention"},
		{func(c *Config) { c.Owner = strings.Repeat("o", 200) }, "owner"},
	}
	for _, tt := range tests {
		c := Config{Brokers: []string{"127.0.0.1:9092"}}
		tt.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate = %v, want an error naming %q", err, tt.want)
		}
	}
}

func TestRelayNewRejectsBadSources(t *testing.T) {
	cfg := Config{Brokers: []string{"127.0.0.1:9092"}}
	if _, err := New(nil, cfg); err == nil {
		t.Error("New accepted a nil DB")
	}
	// sql.Open does not connect, and New does not either.
	db, err := sql.Open("mysql", "root@tcp(127.0.0.1:1)/txmsg")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for name, srcs := range map[string][]Source{
		"nil source":     {nil},
		"duplicate name": {NewOutboxSource(false), NewOutboxSource(true)},
	} {
		if _, err := New(db, cfg, WithSources(srcs...)); err == nil {
			t.Errorf("%s: New accepted the sources", name)
		}
	}
}
