package demo

import (
	"strings"
	"testing"
	"time"
)

func TestDemoConfigValidate(t *testing.T) {
	ok := Config{Rate: 200, Rollback: 0.1, Producers: 4, Drain: time.Second}
	if _, err := New(ok); err != nil {
		t.Fatalf("New(%+v) = %v", ok, err)
	}
	tests := []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Duration = -time.Second }, "--duration"},
		{func(c *Config) { c.Rate = 0 }, "--rate"},
		{func(c *Config) { c.Rollback = 1 }, "--rollback"},
		{func(c *Config) { c.Rollback = -0.1 }, "--rollback"},
		{func(c *Config) { c.Producers = 0 }, "--producers"},
		{func(c *Config) { c.Producers = 65 }, "--producers"},
		{func(c *Config) { c.Drain = 0 }, "--drain"},
	}
	for _, tt := range tests {
		c := ok
		tt.edit(&c)
		if _, err := New(c); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", c, err, tt.want)
		}
	}
}
