package config

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const (
	testDSN     = "root@tcp(127.0.0.1:3306)/txmsg"
	testBrokers = "127.0.0.1:9092"
	// testOperatorToken is a broker operator token.
	testOperatorToken = "config-test-operator-token"
)

func loadRelay(t *testing.T, args ...string) (Relay, error) {
	t.Helper()
	fs := pflag.NewFlagSet("relay", pflag.ContinueOnError)
	l := NewRelay(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return l.Load()
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigRelayDefaults(t *testing.T) {
	t.Parallel()
	c, err := loadRelay(t, "--dsn", testDSN, "--brokers", testBrokers)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Relay
	if r.Shards != 16 || r.BatchSize != 1000 || r.Concurrency != 16 || r.BatchBytes != 4<<20 || r.PollMin != 2*time.Millisecond || r.PollMax != 250*time.Millisecond ||
		r.LeaseTTL != 10*time.Second || r.Heartbeat != 10*time.Second/3 || r.MaxAttempts != 3 ||
		r.PurgeSchedule != "@every 1m" || r.ShutdownTimeout != 10*time.Second || r.Owner == "" {
		t.Errorf("relay defaults: %+v", r)
	}
	if !slices.Equal(r.Brokers, []string{testBrokers}) || !slices.Equal(c.Kafka.Brokers, []string{testBrokers}) {
		t.Errorf("brokers: relay %v, kafka %v", r.Brokers, c.Kafka.Brokers)
	}
	if !strings.Contains(c.DB.DSN, "parseTime=true") || c.DB.Addr != "127.0.0.1:3306" {
		t.Errorf("db: %+v", c.DB)
	}
	if c.Metrics.Listen != DefaultRelayMetricsListen || c.Log.Level != slog.LevelInfo || c.Log.Format != "text" {
		t.Errorf("metrics %+v, log %+v", c.Metrics, c.Log)
	}
}

// TestConfigPrecedence peels the sources off one by one: flag > env > file >
// default. It sets the environment, so it cannot run in parallel.
func TestConfigPrecedence(t *testing.T) {
	path := writeFile(t, "db:\n  dsn: "+testDSN+"\nkafka:\n  brokers: [\"file:1\"]\nrelay:\n  batch_size: 100\n")
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		batch   int
		brokers []string
	}{
		{"default", nil, nil, 1000, nil},
		{"file", nil, []string{"--config", path}, 100, []string{"file:1"}},
		{"env over file", map[string]string{"TXMSG_RELAY_BATCH_SIZE": "200", "TXMSG_KAFKA_BROKERS": "env:1, env:2"},
			[]string{"--config", path}, 200, []string{"env:1", "env:2"}},
		{"flag over env", map[string]string{"TXMSG_RELAY_BATCH_SIZE": "200", "TXMSG_KAFKA_BROKERS": "env:1"},
			[]string{"--config", path, "--relay.batch_size", "300", "--brokers", "flag:1,flag:2"}, 300, []string{"flag:1", "flag:2"}},
		{"config from env", map[string]string{FileEnv: path}, nil, 100, []string{"file:1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"TXMSG_RELAY_BATCH_SIZE", "TXMSG_KAFKA_BROKERS", FileEnv} {
				if v, ok := tc.env[k]; ok {
					t.Setenv(k, v)
				} else {
					unsetenv(t, k)
				}
			}
			args := tc.args
			if tc.brokers == nil {
				args = append(slices.Clone(args), "--brokers", testBrokers, "--dsn", testDSN)
				tc.brokers = []string{testBrokers}
			}
			c, err := loadRelay(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Relay.BatchSize != tc.batch || !slices.Equal(c.Kafka.Brokers, tc.brokers) {
				t.Errorf("batch_size %d, brokers %v; want %d, %v", c.Relay.BatchSize, c.Kafka.Brokers, tc.batch, tc.brokers)
			}
		})
	}
}

func TestConfigEmptySection(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "relay:\n  # shards: 4\nlog:\n  level: debug\n")
	c, err := loadRelay(t, "--config", path, "--dsn", testDSN, "--brokers", testBrokers)
	if err != nil {
		t.Fatal(err)
	}
	if c.Relay.Shards != 16 || c.Log.Level != slog.LevelDebug {
		t.Errorf("shards %d, level %v", c.Relay.Shards, c.Log.Level)
	}
}

func TestConfigDSNFromEnv(t *testing.T) {
	t.Setenv("TXMSG_DB_DSN", "u:secret@tcp(db.example:3307)/app")
	c, err := loadRelay(t, "--brokers", testBrokers)
	if err != nil {
		t.Fatal(err)
	}
	if c.DB.Addr != "db.example:3307" {
		t.Errorf("addr %q", c.DB.Addr)
	}
}

func TestConfigErrorsNameKeyAndValue(t *testing.T) {
	t.Parallel()
	base := []string{"--dsn", testDSN, "--brokers", testBrokers}
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"--relay.batch_size", "-1"}, []string{"config: relay.batch_size: -1: want 1 to 10000"}},
		{[]string{"--relay.shards", "many"}, []string{`config: relay.shards: "many": want a whole number`}},
		{[]string{"--relay.poll_min", "fast"}, []string{`config: relay.poll_min: "fast": want a duration`}},
		{[]string{"--relay.lease_ttl", "10ms"}, []string{`config: relay.lease_ttl: "10ms": want at least 1s`}},
		{[]string{"--relay.poll_min", "1s", "--relay.poll_max", "10ms"}, []string{`config: relay.poll_max: "10ms": want at least relay.poll_min (1s)`}},
		{[]string{"--relay.heartbeat", "8s"}, []string{`config: relay.heartbeat: "8s": want at most relay.lease_ttl/2 (5s)`}},
		{[]string{"--brokers", "nohost"}, []string{`config: kafka.brokers: "nohost": kafka: broker "nohost": want HOST:PORT`}},
		{[]string{"--brokers", ""}, []string{"config: kafka.brokers", "required"}},
		{[]string{"--dsn", ""}, []string{"config: db.dsn", "required"}},
		{[]string{"--dsn", "root:hunter2@tcp(127.0.0.1:3306)"}, []string{`config: db.dsn: "root:***@tcp(127.0.0.1:3306)"`}},
		{[]string{"--log.level", "loud"}, []string{`config: log.level: "loud": want one of info, debug, warn, error`}},
		{[]string{"--relay.purge_schedule", "hourly"}, []string{`config: relay.purge_schedule: "hourly": want a cron spec`}},
		{[]string{"--metrics.listen", "9464"}, []string{`config: metrics.listen: "9464": want HOST:PORT`}},
		{[]string{"--metrics.listen", "127.0.0.1:99999"}, []string{`config: metrics.listen: "127.0.0.1:99999": want HOST:PORT`}},
		// Every bad key is reported, not only the first.
		{[]string{"--relay.batch_size", "0", "--relay.max_attempts", "0"}, []string{"relay.batch_size: 0", "relay.max_attempts: 0"}},
	}
	for _, tc := range cases {
		_, err := loadRelay(t, append(slices.Clone(base), tc.args...)...)
		if err == nil {
			t.Errorf("%q: no error", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not contain %q", tc.args, err, w)
			}
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: error %q shows the password", tc.args, err)
		}
	}
}

func TestConfigFileErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "relay:\n  batch_size: 10\n  batchsize: 20\n", []string{"unknown key relay.batchsize"}},
		{"unknown section", "relai:\n  shards: 4\n", []string{"unknown key relai.shards"}},
		{"malformed", "relay:\n  shards: 4\n   batch_size: [\n", []string{"malformed YAML", "line 3"}},
		{"bad type", "relay:\n  poll_min: 5\n", []string{"config: relay.poll_min: 5: want a duration with a unit"}},
		{"bad value", "relay:\n  batch_size: 20000\n", []string{"config: relay.batch_size: 20000: want 1 to 10000"}},
	}
	for _, tc := range cases {
		path := writeFile(t, tc.body)
		_, err := loadRelay(t, "--config", path, "--dsn", testDSN, "--brokers", testBrokers)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		for _, w := range append(tc.want, "config: ") {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", tc.name, err, w)
			}
		}
		if tc.name != "bad type" && tc.name != "bad value" && !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", tc.name, err)
		}
	}
	_, err := loadRelay(t, "--config", filepath.Join(t.TempDir(), "missing.yaml"), "--dsn", testDSN, "--brokers", testBrokers)
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestConfigAdmin(t *testing.T) {
	t.Parallel()
	fs := pflag.NewFlagSet("migrate", pflag.ContinueOnError)
	l := NewAdmin(fs)
	if fs.Lookup("brokers") != nil {
		t.Error("admin commands take no --brokers")
	}
	if err := fs.Parse([]string{"--dsn", testDSN, "--log.level", "DEBUG"}); err != nil {
		t.Fatal(err)
	}
	c, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != slog.LevelDebug || c.DB.DSN == "" {
		t.Errorf("admin: %+v", c)
	}
}

// TestConfigReloadLogLevel rewrites the file under a running Watch: a valid
// change is delivered, an invalid one is logged and skipped.
func TestConfigReloadLogLevel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	write := func(body string) {
		t.Helper()
		// Write a new file and rename it over the old one, as editors do.
		tmp := filepath.Join(dir, "tmp.yaml")
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("log:\n  level: info\n")
	fs := pflag.NewFlagSet("relay", pflag.ContinueOnError)
	l := NewRelay(fs)
	if err := fs.Parse([]string{"--config", path, "--dsn", testDSN, "--brokers", testBrokers}); err != nil {
		t.Fatal(err)
	}
	c, err := l.Load()
	if err != nil || c.Log.Level != slog.LevelInfo {
		t.Fatalf("initial load: %v, %v", c.Log.Level, err)
	}
	got := make(chan Relay, 10)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := l.Watch(ctx, slog.New(slog.DiscardHandler), func(c Relay) { got <- c }); err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	// The watcher may not be installed yet: rewrite until a change lands.
	waitLevel := func(body string, want slog.Level) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		write(body)
		for {
			select {
			case c := <-got:
				if c.Log.Level == want {
					return
				}
			case <-tick.C:
				write(body)
			case <-deadline:
				t.Fatalf("log.level %v not reloaded", want)
			}
		}
	}
	waitLevel("log:\n  level: debug\n", slog.LevelDebug)
	write("log:\n  level: [\n")
	write("log:\n  levle: warn\n")
	waitLevel("log:\n  level: error\n", slog.LevelError)
	for {
		select {
		case c := <-got:
			if c.Log.Level != slog.LevelError {
				t.Fatalf("a reload after the last good one delivered %v", c.Log.Level)
			}
		default:
			return
		}
	}
}

func TestConfigBroker(t *testing.T) {
	t.Parallel()
	load := func(args ...string) (Broker, error) {
		fs := pflag.NewFlagSet("broker", pflag.ContinueOnError)
		l := NewBroker(fs)
		if err := fs.Parse(append([]string{"--dsn", testDSN, "--brokers", testBrokers,
			"--broker.auth.operator_token", testOperatorToken}, args...)); err != nil {
			t.Fatal(err)
		}
		return l.Load()
	}
	c, err := load("--listen", "127.0.0.1:7071", "--checkback.max_checks", "5", "--relay.shards", "8")
	if err != nil {
		t.Fatal(err)
	}
	b := c.Broker
	if b.Listen != "127.0.0.1:7071" || b.MaxChecks != 5 || b.CheckTimeout != 6*time.Second || b.ScanSchedule != "@every 1s" ||
		b.Relay.Shards != 8 || !slices.Equal(b.Relay.Brokers, []string{testBrokers}) || c.Metrics.Listen != DefaultBrokerMetricsListen {
		t.Errorf("broker config: %+v, metrics %+v", b, c.Metrics)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--checkback.max_checks", "0"}, "config: checkback.max_checks: 0: want 1 to 1000"},
		{[]string{"--listen", "7070"}, `config: broker.listen: "7070": want HOST:PORT`},
		{[]string{"--listen", "127.0.0.1:http"}, `config: broker.listen: "127.0.0.1:http": want HOST:PORT`},
		{[]string{"--broker.max_value_bytes", "5000", "--broker.max_body_bytes", "4096"}, "config: broker.max_value_bytes: 5000: want at most broker.max_body_bytes (4096)"},
		{[]string{"--checkback.scan", "every second"}, `config: checkback.scan: "every second": want a cron spec`},
	} {
		_, err := load(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

// unsetenv removes the variable k for the test, restoring it after.
func unsetenv(t *testing.T, k string) {
	t.Helper()
	t.Setenv(k, "")
	if err := os.Unsetenv(k); err != nil {
		t.Fatal(err)
	}
}

// TestConfigEmptyEnvIsAValue: the environment sets every value a flag can,
// the empty one included. It sets the environment, so it cannot run in
// parallel.
func TestConfigEmptyEnvIsAValue(t *testing.T) {
	path := writeFile(t, "metrics:\n  listen: 127.0.0.1:9999\nrelay:\n  owner: from-file\n")
	t.Setenv("TXMSG_METRICS_LISTEN", "")
	t.Setenv("TXMSG_RELAY_OWNER", "")
	c, err := loadRelay(t, "--config", path, "--dsn", testDSN, "--brokers", testBrokers)
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Listen != "" {
		t.Errorf("TXMSG_METRICS_LISTEN= left metrics.listen %q, want it off", c.Metrics.Listen)
	}
	if c.Relay.Owner == "from-file" || c.Relay.Owner == "" {
		t.Errorf("TXMSG_RELAY_OWNER= left relay.owner %q, want the generated name", c.Relay.Owner)
	}
	t.Setenv("TXMSG_RELAY_BATCH_SIZE", "")
	if _, err := loadRelay(t, "--dsn", testDSN, "--brokers", testBrokers); err == nil ||
		!strings.Contains(err.Error(), `config: relay.batch_size: "": want a whole number`) {
		t.Errorf("TXMSG_RELAY_BATCH_SIZE=: %v, want the error a flag --relay.batch_size= gives", err)
	}
}

// Secrets never show in errors, however they are mistyped: a DSN without
// "@", a password YAML reads as a number, a map where a password belongs.
// A string YAML would turn into a number is refused, not changed.
func TestConfigErrorsHideSecretsAndKeepStrings(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		args []string
		body string
		want string
	}{
		"DSN without @": {args: []string{"--dsn", "root:Sup3rS3cret/db", "--brokers", testBrokers}, want: "db.dsn"},
		"numeric password": {body: "kafka:\n  sasl:\n    mechanism: PLAIN\n    username: u\n    password: 12345678901234567890\n",
			want: "kafka.sasl.password: \"***\": want a string: quote it"},
		"map for a password": {body: "kafka:\n  sasl:\n    password:\n      Sup3rS3cret: x\n", want: "unknown key kafka.sasl.password.***"},
		// YAML reads 0123 as octal: 83.
		"unquoted octal-looking name": {body: "relay:\n  owner: 0123\n", want: "relay.owner: 83: want a string: quote it"},
	} {
		args := c.args
		if c.body != "" {
			args = []string{"--config", writeFile(t, c.body), "--dsn", testDSN, "--brokers", testBrokers}
		}
		_, err := loadRelay(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, c.want)
			continue
		}
		for _, secret := range []string{"Sup3rS3cret", "12345678901234567890"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: error %q shows the secret", name, err)
			}
		}
	}
}

// The admin commands read a daemon's configuration file (migrate with the
// relay's, group with the broker's), keys of other commands and all; a
// typo is still an error.
func TestConfigAdminReadsADaemonsFile(t *testing.T) {
	t.Parallel()
	body := "db:\n  dsn: " + testDSN + "\nkafka:\n  brokers: [" + testBrokers + "]\nrelay:\n  shards: 8\nmetrics:\n  listen: 127.0.0.1:9464\nbroker:\n  listen: 127.0.0.1:8080\n"
	for _, typo := range []bool{false, true} {
		b := body
		if typo {
			b += "relay:\n  batchsize: 10\n"
			b = strings.Replace(b, "relay:\n  shards: 8\n", "", 1)
		}
		fs := pflag.NewFlagSet("migrate", pflag.ContinueOnError)
		l := NewAdmin(fs)
		if err := fs.Parse([]string{"--config", writeFile(t, b)}); err != nil {
			t.Fatal(err)
		}
		_, err := l.Load()
		if typo != (err != nil) || (typo && !strings.Contains(err.Error(), "unknown key relay.batchsize")) {
			t.Errorf("typo %t: %v", typo, err)
		}
	}
}

// TestConfigReloadConfigMapSwap: Kubernetes updates a mounted ConfigMap by
// swapping the "..data" symlink its file leads through; no event names the
// file, and the change is reloaded all the same.
func TestConfigReloadConfigMapSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := 0
	swap := func(body string) {
		t.Helper()
		version++
		v := filepath.Join(dir, fmt.Sprintf("..v%d", version))
		if err := os.Mkdir(v, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v, "relay.yaml"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(v), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swap("log:\n  level: info\n")
	path := filepath.Join(dir, "relay.yaml")
	if err := os.Symlink(filepath.Join("..data", "relay.yaml"), path); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("relay", pflag.ContinueOnError)
	l := NewRelay(fs)
	if err := fs.Parse([]string{"--config", path, "--dsn", testDSN, "--brokers", testBrokers}); err != nil {
		t.Fatal(err)
	}
	if c, err := l.Load(); err != nil || c.Log.Level != slog.LevelInfo {
		t.Fatalf("initial load: %v, %v", c.Log.Level, err)
	}
	got := make(chan Relay, 10)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := l.Watch(ctx, slog.New(slog.DiscardHandler), func(c Relay) { got <- c }); err != nil {
			t.Errorf("watch: %v", err)
		}
	})
	defer func() { cancel(); wg.Wait() }()
	// The watcher may not be installed yet: swap until a change lands.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	swap("log:\n  level: debug\n")
	for {
		select {
		case c := <-got:
			if c.Log.Level == slog.LevelDebug {
				return
			}
		case <-tick.C:
			swap("log:\n  level: debug\n")
		case <-deadline:
			t.Fatal("a ConfigMap swap was not reloaded")
		}
	}
}

// An empty DSN file is named as the problem, not the empty DSN it gives.
func TestConfigEmptyDSNFile(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "\n")
	_, err := loadRelay(t, "--db.dsn_file", path, "--brokers", testBrokers)
	if err == nil || !strings.Contains(err.Error(), "db.dsn_file") || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty DSN file: %v, want an error naming db.dsn_file, the file and that it is empty", err)
	}
}

func TestConfigMaskDSN(t *testing.T) {
	t.Parallel()
	for dsn, want := range map[string]string{
		"root:root/db":                      "***/db",
		"root:roo/db":                       "***/db",
		"u:p@tcp(h:3306)/db":                "u:***@tcp(h:3306)/db",
		"tcp(127.0.0.1:3306)/db":            "tcp(127.0.0.1:3306)/db",
		"app:s3cr:et@tcp(127.0.0.1:3306)/x": "app:***@tcp(127.0.0.1:3306)/x",
	} {
		if got := MaskDSN(dsn); got != want {
			t.Errorf("MaskDSN(%q) = %q, want %q", dsn, got, want)
		}
	}
}

// A TXMSG_ variable naming no key is refused, not ignored: a misspelling
// would otherwise leave its setting at the default. The error names the
// variable and the one meant, never the value; the variables of txmsg's
// own tests and benchmarks pass.
func TestConfigUnknownEnvironmentVariable(t *testing.T) {
	t.Setenv("TXMSG_RELAY_BATCHSIZE", "20")
	t.Setenv("TXMSG_KAFKA_SASL_PASWORD", "Sup3rS3cret")
	t.Setenv("TXMSG_BENCH_ROWS", "100000")
	t.Setenv("TXMSG_SERVICE_HOST", "10.0.0.1")
	t.Setenv("TXMSG_PORT_7070_TCP", "tcp://10.0.0.1:7070")
	_, err := loadRelay(t, "--dsn", testDSN, "--brokers", testBrokers)
	if err == nil {
		t.Fatal("misspelled variables were accepted")
	}
	for _, want := range []string{
		"unknown environment variable TXMSG_RELAY_BATCHSIZE (did you mean TXMSG_RELAY_BATCH_SIZE?)",
		"unknown environment variable TXMSG_KAFKA_SASL_PASWORD",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "Sup3rS3cret") || strings.Contains(err.Error(), "BENCH") ||
		strings.Contains(err.Error(), "TXMSG_SERVICE") || strings.Contains(err.Error(), "TXMSG_PORT") {
		t.Errorf("error %q shows a value or an exempt variable", err)
	}
	unsetenv(t, "TXMSG_RELAY_BATCHSIZE")
	unsetenv(t, "TXMSG_KAFKA_SASL_PASWORD")
	// A broker key in the relay's environment is another daemon's, not a typo.
	t.Setenv("TXMSG_BROKER_LISTEN", "127.0.0.1:7070")
	if _, err := loadRelay(t, "--dsn", testDSN, "--brokers", testBrokers); err != nil {
		t.Fatal(err)
	}
}
