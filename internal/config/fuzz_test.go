package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// FuzzConfigRelayFile feeds arbitrary files to the relay's loader: it must
// return a configuration or an error that starts with "config: ", never
// panic.
func FuzzConfigRelayFile(f *testing.F) {
	f.Add("relay:\n  batch_size: 10\n")
	f.Add("relay:\n  poll_min: 5\n  poll_max: 1ms\n")
	f.Add("kafka:\n  brokers: [a:1, {x: 1}]\n")
	f.Add("db: [1, 2]\n")
	f.Add("relay: ~\nlog:\n  level: [\n")
	f.Add("relay:\n  shards: 1e3\n  owner: 12\n")
	f.Fuzz(func(t *testing.T, body string) {
		path := filepath.Join(t.TempDir(), "relay.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet("relay", pflag.ContinueOnError)
		l := NewRelay(fs)
		if err := fs.Parse([]string{"--config", path, "--dsn", testDSN, "--brokers", testBrokers}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Load(); err != nil && !strings.HasPrefix(err.Error(), "config: ") {
			t.Errorf("error %q does not start with \"config: \"", err)
		}
	})
}
