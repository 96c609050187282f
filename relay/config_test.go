package relay

import (
	"database/sql"
	"strings"
	"testing"
	"time"
)

func TestRelayConfigDefaultsAndValidation(t *testing.T) {
	c := Config{Brokers: []string{"127.0.0.1:9092"}}
	if err := c.Validate(); err == nil {
		t.Fatal("Validate accepted a Config without defaults")
	}
	if c.Shards != 0 || c.Owner != "" {
		t.Fatalf("Validate changed its Config: %+v", c)
	}
	d := c.WithDefaults()
	if c.Shards != 0 || c.Owner != "" {
		t.Fatalf("WithDefaults changed its receiver: %+v", c)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.Shards != 16 || d.BatchSize != 1000 || d.Concurrency != 16 || d.BatchBytes != 4<<20 || d.LeaseTTL != 10*time.Second || d.Heartbeat != d.LeaseTTL/3 || d.Owner == "" {
		t.Fatalf("defaults not applied: %+v", d)
	}
	def := DefaultConfig()
	def.Brokers = c.Brokers
	if err := def.Validate(); err != nil {
		t.Fatalf("DefaultConfig with brokers: %v", err)
	}
	tests := []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Brokers = nil }, "no brokers"},
		{func(c *Config) { c.Brokers = []string{"nohost"} }, `kafka.brokers: "nohost": kafka: broker "nohost"`},
		{func(c *Config) { c.Shards = -1 }, "relay.shards: -1: want 1 to 4096"},
		{func(c *Config) { c.BatchSize = 20000 }, "relay.batch_size: 20000"},
		{func(c *Config) { c.Concurrency = -1 }, "relay.concurrency: -1"},
		{func(c *Config) { c.PollMin, c.PollMax = time.Second, time.Millisecond }, `relay.poll_max: "1ms": want at least relay.poll_min (1s)`},
		// poll_max 0 is the default 250ms, below this poll_min.
		{func(c *Config) { c.PollMin, c.PollMax = 500*time.Millisecond, 0 }, `relay.poll_min: "500ms": want at most relay.poll_max (250ms by default)`},
		{func(c *Config) { c.LeaseTTL = time.Millisecond }, "relay.lease_ttl"},
		{func(c *Config) { c.Heartbeat = 9 * time.Second }, "relay.heartbeat"},
		{func(c *Config) { c.RetryInitial = -time.Second }, "relay.retry_initial"},
		{func(c *Config) { c.MaxAttempts = -2 }, "relay.max_attempts"},
		{func(c *Config) { c.Retention = -time.Hour }, `relay.retention: "-1h"`},
		{func(c *Config) { c.PurgeSchedule = "often" }, `relay.purge_schedule: "often"`},
		{func(c *Config) { c.Owner = strings.Repeat("o", 200) }, "relay.owner"},
	}
	for _, tt := range tests {
		c := Config{Brokers: []string{"127.0.0.1:9092"}}.WithDefaults()
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
