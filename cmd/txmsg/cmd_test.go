package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// TestCmdBadInput: a mistake in the command line or the configuration, or a
// server that cannot be reached, ends the process with a clear message and a
// non-zero status, never a panic.
func TestCmdBadInput(t *testing.T) {
	t.Parallel()
	malformed := writeFile(t, "malformed.yaml", "relay:\n  shards: 4\n   batch_size: [\n")
	unknown := writeFile(t, "unknown.yaml", "relay:\n  batchsize: 10\n")
	ok := []string{"--dsn", "root@tcp(127.0.0.1:3306)/txmsg", "--brokers", "127.0.0.1:9092"}
	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"no command", nil, 2, []string{"Usage: txmsg COMMAND"}},
		{"unknown command", []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{"unknown flag", []string{"relay", "--frob"}, 2, []string{"txmsg relay: unknown flag: --frob"}},
		{"migrate without action", []string{"migrate"}, 2, []string{"missing action"}},
		{"migrate bad steps", []string{"migrate", "down", "x"}, 2, []string{`down: N "x"`}},
		{"dead without action", []string{"outbox", "dead"}, 2, []string{"outbox dead list"}},
		{"half bad decision", []string{"half", "resolve", "id1", "maybe"}, 2, []string{`decision "maybe"`}},
		{"devkafka bad listen", []string{"devkafka", "--listen", "9092"}, 2, []string{`--listen "9092": want HOST:PORT`}},
		{"malformed config", append([]string{"relay", "--config", malformed}, ok...), 1,
			[]string{"txmsg relay: config: " + malformed + ": malformed YAML", "line 3"}},
		{"unknown key", append([]string{"relay", "--config", unknown}, ok...), 1,
			[]string{"txmsg relay: config: " + unknown + ": unknown key relay.batchsize"}},
		{"missing config file", append([]string{"relay", "--config", filepath.Join(t.TempDir(), "nope.yaml")}, ok...), 1,
			[]string{"nope.yaml", "no such file"}},
		{"bad value", append([]string{"relay", "--relay.batch_size", "-1"}, ok...), 1,
			[]string{"txmsg relay: config: relay.batch_size: -1: want 1 to 10000"}},
		{"bad dsn and no brokers", []string{"relay", "--dsn", "nonsense"}, 1,
			[]string{`config: db.dsn: "nonsense"`, "config: kafka.brokers", "required"}},
		{"unreachable dsn", []string{"relay", "--dsn", "root@tcp(127.0.0.1:1)/txmsg", "--brokers", "127.0.0.1:9092"}, 1,
			[]string{"txmsg relay: database at 127.0.0.1:1 unreachable", "connection refused"}},
		{"unreachable dsn migrate", []string{"migrate", "up", "--dsn", "root@tcp(127.0.0.1:1)/txmsg"}, 1,
			[]string{"txmsg migrate: database at 127.0.0.1:1 unreachable"}},
		{"unreachable dsn broker", []string{"broker", "--dsn", "root@tcp(127.0.0.1:1)/txmsg", "--brokers", "127.0.0.1:9092",
			"--broker.auth.disabled=true"}, 1,
			[]string{"txmsg broker: database at 127.0.0.1:1 unreachable"}},
		{"broker without a token", []string{"broker", "--dsn", "root@tcp(127.0.0.1:1)/txmsg", "--brokers", "127.0.0.1:9092"}, 1,
			[]string{"no operator token: the API needs one", "openssl rand -hex 32", "broker.auth.operator_token_file"}},
		{"group without action", []string{"group"}, 2, []string{"missing action"}},
		{"group create without url", []string{"group", "create", "shop"}, 2, []string{"--url is required"}},
		{"unreachable dsn dev", []string{"dev", "--dsn", "root@tcp(127.0.0.1:1)/txmsg_dev"}, 1,
			[]string{"txmsg dev: database at 127.0.0.1:1 unreachable"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := txmsgRun(t, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit status %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q lacks %q", r.stderr, w)
				}
			}
			if tc.code == 1 && strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Errorf("want a one-line error, got:\n%s", r.stderr)
			}
		})
	}
}

// TestCmdConfigSources: the binary reads the environment and the file, and
// a flag wins over both.
func TestCmdConfigSources(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "relay.yaml", "db:\n  dsn: root@tcp(127.0.0.3:1)/txmsg\nkafka:\n  brokers: [\"127.0.0.1:9092\"]\n")
	env := []string{"TXMSG_DB_DSN=root@tcp(127.0.0.2:1)/txmsg", "TXMSG_KAFKA_BROKERS=127.0.0.1:9092,127.0.0.1:9093"}
	cases := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"file", nil, []string{"--config", file}, "database at 127.0.0.3:1 unreachable"},
		{"env over file", env, []string{"--config", file}, "database at 127.0.0.2:1 unreachable"},
		{"flag over env", env, []string{"--config", file, "--dsn", "root@tcp(127.0.0.1:1)/txmsg"}, "database at 127.0.0.1:1 unreachable"},
		{"env value checked", []string{"TXMSG_RELAY_BATCH_SIZE=0"}, []string{"--config", file}, "config: relay.batch_size: 0: want 1 to 10000"},
		{"config file from env", []string{"TXMSG_CONFIG=" + file}, nil, "database at 127.0.0.3:1 unreachable"},
	}
	for _, tc := range cases {
		r := txmsgRunEnv(t, tc.env, append([]string{"relay", "--db.connect_timeout", "2s"}, tc.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit status %d, stderr %q; want 1 and %q", tc.name, r.code, r.stderr, tc.want)
		}
	}
}

// TestCmdUnreachableBrokers needs a reachable database, so that the broker
// check is the one that fails.
func TestCmdUnreachableBrokers(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	for _, cmd := range []string{"relay", "broker"} {
		r := txmsgRunEnv(t, []string{"TXMSG_BROKER_AUTH_OPERATOR_TOKEN=" + cmdOperatorToken}, cmd,
			"--dsn", db.DSN, "--brokers", "127.0.0.1:1", "--metrics.listen", "")
		if r.code != 1 || !strings.Contains(r.stderr, "txmsg "+cmd+": Kafka brokers 127.0.0.1:1 unreachable") ||
			strings.Contains(strings.TrimSpace(r.stderr), "\n") {
			t.Errorf("%s: exit status %d, stderr %q", cmd, r.code, r.stderr)
		}
	}
}

// TestCmdUnmigrated: a daemon on a database without the schema says to
// migrate it.
func TestCmdUnmigrated(t *testing.T) {
	t.Parallel()
	db := testenv.NewEmptyDB(t)
	for _, cmd := range []string{"relay", "broker"} {
		r := txmsgRunEnv(t, []string{"TXMSG_BROKER_AUTH_OPERATOR_TOKEN=" + cmdOperatorToken}, cmd,
			"--dsn", db.DSN, "--brokers", "127.0.0.1:1", "--metrics.listen", "")
		if r.code != 1 || !strings.Contains(r.stderr, "has no txmsg schema: run 'txmsg migrate up' first") {
			t.Errorf("%s: exit status %d, stderr %q", cmd, r.code, r.stderr)
		}
	}
	if r := txmsgRun(t, "migrate", "up", "--dsn", db.DSN); r.code != 0 {
		t.Fatalf("migrate up: %d %s", r.code, r.stderr)
	}
	if r := txmsgRun(t, "migrate", "down", "--dsn", db.DSN); r.code != 0 {
		t.Fatalf("migrate down: %d %s", r.code, r.stderr)
	}
	r := txmsgRun(t, "relay", "--dsn", db.DSN, "--brokers", "127.0.0.1:1", "--metrics.listen", "")
	if r.code != 1 || !strings.Contains(r.stderr, "lacks migrations") {
		t.Errorf("relay after down: exit status %d, stderr %q", r.code, r.stderr)
	}
}

func TestCmdHelpAndVersion(t *testing.T) {
	t.Parallel()
	r := txmsgRun(t, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "txmsg ") {
		t.Errorf("version: %d %q", r.code, r.stdout)
	}
	r = txmsgRun(t, "help")
	if r.code != 0 || !strings.Contains(r.stdout, "devkafka") {
		t.Errorf("help: %d %q", r.code, r.stdout)
	}
	r = txmsgRun(t, "relay", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--relay.batch_size") || !strings.Contains(r.stdout, "TXMSG_RELAY_BATCH_SIZE") {
		t.Errorf("relay --help: %d %q", r.code, r.stdout)
	}
}

// TestCmdMigrate: up twice is a no-op, status lists the versions, down
// reverts one.
func TestCmdMigrate(t *testing.T) {
	t.Parallel()
	db := testenv.NewEmptyDB(t)
	r := txmsgRun(t, "migrate", "up", "--dsn", db.DSN)
	if r.code != 0 || !strings.Contains(r.stdout, "applied 0001_outbox") {
		t.Fatalf("first up: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	applied := strings.Count(r.stdout, "applied ")
	r = txmsgRun(t, "migrate", "up", "--dsn", db.DSN)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "schema is up to date" {
		t.Fatalf("second up: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "migrate", "status", "--dsn", db.DSN)
	if r.code != 0 || countState(r.stdout, "applied") != applied || !regexp.MustCompile(`(?m)^0001\s+outbox\s+applied$`).MatchString(r.stdout) {
		t.Fatalf("status: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "migrate", "down", "--dsn", db.DSN)
	if r.code != 0 || strings.Count(r.stdout, "reverted ") != 1 {
		t.Fatalf("down: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "migrate", "status", "--dsn", db.DSN)
	if r.code != 0 || countState(r.stdout, "pending") != 1 {
		t.Fatalf("status after down: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "migrate", "up", "--dsn", db.DSN)
	if r.code != 0 || strings.Count(r.stdout, "applied ") != 1 {
		t.Fatalf("up after down: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A migration that failed half way: daemons and up refuse, status shows
	// it, force repairs it.
	if _, err := db.DB.Exec("UPDATE txmsg_schema_migrations SET dirty = TRUE"); err != nil {
		t.Fatal(err)
	}
	force := fmt.Sprintf("'txmsg migrate force %d'", applied)
	r = txmsgRun(t, "relay", "--dsn", db.DSN, "--brokers", "127.0.0.1:1", "--metrics.listen", "")
	if r.code != 1 || !strings.Contains(r.stderr, "failed half way") || !strings.Contains(r.stderr, force) {
		t.Fatalf("relay on a dirty schema: %d\n%s", r.code, r.stderr)
	}
	r = txmsgRun(t, "migrate", "up", "--dsn", db.DSN)
	if r.code != 1 || !strings.Contains(r.stderr, force) {
		t.Fatalf("up on a dirty schema: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "migrate", "status", "--dsn", db.DSN)
	if r.code != 0 || countState(r.stdout, "dirty") != 1 || countState(r.stdout, "applied") != applied-1 {
		t.Fatalf("status of a dirty schema: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "migrate", "force", strconv.Itoa(applied), "--dsn", db.DSN)
	if r.code != 0 || strings.TrimSpace(r.stdout) != fmt.Sprintf("version %04d marked applied", applied) {
		t.Fatalf("force: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "migrate", "up", "--dsn", db.DSN)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "schema is up to date" {
		t.Fatalf("up after force: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "migrate", "force", "999", "--dsn", db.DSN)
	if r.code != 1 || !strings.Contains(r.stderr, "no migration 0999") {
		t.Fatalf("force of an unknown version: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// countState counts the lines of migrate status in state.
func countState(status, state string) int {
	return len(regexp.MustCompile(`(?m)\s`+state+`$`).FindAllString(status, -1))
}

// TestCmdDevKafka: devkafka prints its address, serves Kafka there, and
// exits 0 on SIGTERM.
func TestCmdDevKafka(t *testing.T) {
	t.Parallel()
	p := txmsgStart(t, "devkafka", "--listen", "127.0.0.1:0", "--partitions", "3")
	addr := p.waitLine(false, regexp.MustCompile(`^(127\.0\.0\.1:\d+)$`), 10*time.Second)[1]
	w, err := kafkax.NewWriter([]string{addr}, kafkax.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	testenv.Eventually(t, 15*time.Second, func() error {
		return w.WriteMessages(ctx, kafka.Message{Topic: "hello", Key: []byte("k"), Value: []byte("v")})
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := testenv.Records(ctx, []string{addr}, "hello")
	if err != nil || len(recs) == 0 {
		t.Fatalf("read back: %d records, %v", len(recs), err)
	}
	if code := p.stop(10 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
}

// TestCmdRelay runs the relay daemon: it serves /healthz, /readyz and
// /metrics, relays what producers commit, applies a log.level change in its
// config file, and exits 0 on SIGTERM.
func TestCmdRelay(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	cfg := writeFile(t, "relay.yaml", "log:\n  level: info\nrelay:\n  shards: 4\n")
	p := txmsgStart(t, "relay", "--config", cfg, "--dsn", db.DSN, "--brokers", k.Addrs[0], "--metrics.listen", "127.0.0.1:0")
	base := "http://" + p.waitLine(true, regexp.MustCompile(`serving /healthz.* addr=(\S+)`), 20*time.Second)[1]
	testenv.Eventually(t, 20*time.Second, func() error {
		if code, body := httpGet(base + "/readyz"); code != 200 {
			return fmt.Errorf("/readyz: %d %s", code, body)
		}
		return nil
	})
	if code, _ := httpGet(base + "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}

	pub, err := outbox.NewPublisher(outbox.WithShards(4))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 50
	for i := range n {
		msg := txmsg.Message{Topic: "cmd-relay", Key: []byte("k" + strconv.Itoa(i%5)), Value: []byte(strconv.Itoa(i))}
		if err := pub.Publish(ctx, db.DB, msg); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		recs, err := testenv.Records(ctx, k.Addrs, "cmd-relay")
		if err != nil || len(recs) < n {
			return fmt.Errorf("%d of %d records, %v", len(recs), n, err)
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		_, body := httpGet(base + "/metrics")
		if !strings.Contains(body, `txmsg_relay_published_total{source="outbox",topic="cmd-relay"} 50`) {
			return fmt.Errorf("/metrics lacks the published count")
		}
		return nil
	})

	// Rewrite the file until the watcher, which may start after the relay
	// is ready, reports the change; not too often, as the watcher waits for
	// writes to settle.
	var last time.Time
	rewrite := func() {
		if time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		tmp := cfg + ".tmp"
		if err := os.WriteFile(tmp, []byte("log:\n  level: debug\nrelay:\n  shards: 4\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfg); err != nil {
			t.Fatal(err)
		}
	}
	rewrite()
	testenv.Eventually(t, 10*time.Second, func() error {
		if strings.Contains(p.errText(), `msg="log level changed" from=INFO to=DEBUG`) {
			return nil
		}
		rewrite()
		return fmt.Errorf("no reload of log.level yet")
	})
	if code := p.stop(30 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
}

// TestCmdOutboxDead lists and retries dead letters.
func TestCmdOutboxDead(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	for _, id := range []string{"dead-1", "dead-2", "dead-3"} {
		_, err := db.DB.Exec(`INSERT INTO txmsg_dead_letters (id, source, shard, topic, msg_key, value, headers, created_at, attempts, last_error, dead_at)
VALUES (?, 'outbox', 0, 'orders', 'k', 'v', NULL, UTC_TIMESTAMP(6), 3, 'message too large', UTC_TIMESTAMP(6))`, id)
		if err != nil {
			t.Fatal(err)
		}
	}
	r := txmsgRun(t, "outbox", "dead", "list", "--dsn", db.DSN)
	if r.code != 0 || strings.Count(r.stdout, "message too large") != 3 || !strings.Contains(r.stdout, "dead-2") {
		t.Fatalf("list: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "outbox", "dead", "retry", "dead-1", "--dsn", db.DSN)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "requeued dead-1" {
		t.Fatalf("retry: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "outbox", "dead", "retry", "dead-1", "--dsn", db.DSN)
	if r.code != 1 || !strings.Contains(r.stderr, "dead letter dead-1: not found") {
		t.Fatalf("retry again: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "outbox", "dead", "retry", "--all", "--dsn", db.DSN)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "requeued 2 dead letters" {
		t.Fatalf("retry --all: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var outboxRows, deadRows int
	if err := db.DB.QueryRow(`SELECT (SELECT COUNT(*) FROM txmsg_outbox), (SELECT COUNT(*) FROM txmsg_dead_letters)`).Scan(&outboxRows, &deadRows); err != nil {
		t.Fatal(err)
	}
	if outboxRows != 3 || deadRows != 0 {
		t.Errorf("after retries: %d outbox rows, %d dead letters; want 3 and 0", outboxRows, deadRows)
	}
}

// cmdOperatorToken is the operator token of the brokers the tests start.
const cmdOperatorToken = "cmd-test-operator-token-0123456789"

// TestCmdBroker runs the broker daemon with an operator token from a file,
// registers a producer group with `txmsg group`, prepares and commits a half
// message through the API with the group's token, sees it in Kafka, and
// administers half messages with `txmsg half`.
func TestCmdBroker(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	tokenFile := writeFile(t, "operator-token", cmdOperatorToken+"\n")
	p := txmsgStart(t, "broker", "--dsn", db.DSN, "--brokers", k.Addrs[0], "--listen", "127.0.0.1:0",
		"--metrics.listen", "127.0.0.1:0", "--log.level", "info", "--broker.auth.operator_token_file", tokenFile,
		"--checkback.allow_loopback=true")
	metricsBase := "http://" + p.waitLine(true, regexp.MustCompile(`serving /healthz.* addr=(\S+)`), 20*time.Second)[1]
	api := "http://" + p.waitLine(true, regexp.MustCompile(`serving the half-message API.* addr=(\S+)`), 20*time.Second)[1]
	testenv.Eventually(t, 20*time.Second, func() error {
		if code, body := httpGet(metricsBase + "/readyz"); code != 200 {
			return fmt.Errorf("/readyz: %d %s", code, body)
		}
		return nil
	})
	ctx := context.Background()
	anonymous, err := halfmsg.NewClient(api)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := anonymous.List(ctx, halfmsg.Filter{}); !errors.Is(err, txmsg.ErrUnauthorized) {
		t.Fatalf("list without a token: %v, want ErrUnauthorized", err)
	}

	r := txmsgRun(t, "group", "create", "cmd-test", "--url", "http://127.0.0.1:1/check", "--dsn", db.DSN)
	if r.code != 1 || !strings.Contains(r.stderr, "loopback") {
		t.Fatalf("group create with a loopback URL and no allow_loopback: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "group", "create", "cmd-test", "--url", "http://127.0.0.1:1/check", "--dsn", db.DSN,
		"--checkback.allow_loopback=true")
	token := regexp.MustCompile(`(?m)^token: +(txgt_[0-9a-f]{64})$`).FindStringSubmatch(r.stdout)
	secret := regexp.MustCompile(`(?m)^secret: +(txcs_[0-9a-f]{64})$`).FindStringSubmatch(r.stdout)
	if r.code != 0 || token == nil || secret == nil || strings.Contains(r.stderr, token[1]) || strings.Contains(r.stderr, secret[1]) {
		t.Fatalf("group create: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "group", "list", "--dsn", db.DSN)
	if r.code != 0 || !strings.Contains(r.stdout, "cmd-test") || !strings.Contains(r.stdout, "http://127.0.0.1:1/check") ||
		strings.Contains(r.stdout, token[1]) || strings.Contains(r.stdout, secret[1]) {
		t.Fatalf("group list: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	client, err := halfmsg.NewClient(api, halfmsg.WithToken(token[1]))
	if err != nil {
		t.Fatal(err)
	}
	prepare := func(value string) string {
		t.Helper()
		id, err := client.Prepare(ctx, halfmsg.PrepareRequest{
			ProducerGroup: "cmd-test",
			CheckTimeout:  time.Hour,
			Message:       txmsg.Message{Topic: "cmd-half", Key: []byte("k"), Value: []byte(value)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	committed, pending := prepare("one"), prepare("two")
	if _, err := client.Commit(ctx, committed); err != nil {
		t.Fatal(err)
	}
	p.waitLine(true, regexp.MustCompile(`broker: audit: half message committed.* actor="group cmd-test" msg_id=`+committed), 20*time.Second)
	testenv.Eventually(t, 30*time.Second, func() error {
		recs, err := testenv.Records(ctx, k.Addrs, "cmd-half")
		if err != nil || len(recs) != 1 {
			return fmt.Errorf("%d records, %v", len(recs), err)
		}
		if got := testenv.HeaderValue(recs[0], txmsg.HeaderID); got != committed {
			return fmt.Errorf("record id %q, want %q", got, committed)
		}
		return nil
	})

	r = txmsgRun(t, "half", "list", "--state", "prepared", "--dsn", db.DSN)
	if r.code != 0 || !strings.Contains(r.stdout, pending) || strings.Contains(r.stdout, committed) {
		t.Fatalf("half list: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "half", "resolve", pending, "rollback", "--reason", "test", "--dsn", db.DSN)
	if r.code != 0 || strings.TrimSpace(r.stdout) != pending+" is rolled_back" || !strings.Contains(r.stderr, "broker: audit") {
		t.Fatalf("half resolve: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRun(t, "half", "resolve", committed, "rollback", "--dsn", db.DSN)
	if r.code != 1 || !strings.Contains(r.stderr, "illegal state transition") {
		t.Fatalf("half resolve of a delivered message: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A rotation stops the old token at once; a deletion stops the new one.
	r = txmsgRun(t, "group", "rotate", "cmd-test", "--dsn", db.DSN)
	newToken := regexp.MustCompile(`(?m)^token: +(txgt_[0-9a-f]{64})$`).FindStringSubmatch(r.stdout)
	if r.code != 0 || newToken == nil || newToken[1] == token[1] || !strings.Contains(r.stdout, "http://127.0.0.1:1/check") {
		t.Fatalf("group rotate: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, _, err := client.List(ctx, halfmsg.Filter{}); !errors.Is(err, txmsg.ErrUnauthorized) {
		t.Fatalf("list with the rotated token: %v, want ErrUnauthorized", err)
	}
	rotated, err := halfmsg.NewClient(api, halfmsg.WithToken(newToken[1]))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rotated.List(ctx, halfmsg.Filter{}); err != nil {
		t.Fatalf("list with the new token: %v", err)
	}
	if r = txmsgRun(t, "group", "delete", "cmd-test", "--dsn", db.DSN); r.code != 0 {
		t.Fatalf("group delete: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, _, err := rotated.List(ctx, halfmsg.Filter{}); !errors.Is(err, txmsg.ErrUnauthorized) {
		t.Fatalf("list with a deleted group's token: %v, want ErrUnauthorized", err)
	}
	if code := p.stop(30 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
	for _, secretText := range []string{cmdOperatorToken, token[1], newToken[1], secret[1]} {
		if strings.Contains(p.errText(), secretText) {
			t.Errorf("the broker's log shows a token or secret")
		}
	}
}

// TestCmdDev runs the one-process demo for a few seconds against a
// database it must create, and expects every committed message consumed and
// no rolled-back one.
func TestCmdDev(t *testing.T) {
	t.Parallel()
	base := testenv.BaseDSN(t)
	mc, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	mc.DBName = "txmsg_t_dev_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		admin, err := sql.Open("mysql", base)
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close()
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + mc.DBName); err != nil {
			t.Error(err)
		}
	})
	r := txmsgRun(t, "dev", "--dsn", mc.FormatDSN(), "--duration", "5s", "--rate", "100")
	if r.code != 0 {
		t.Fatalf("dev: exit status %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	m := regexp.MustCompile(`summary: committed=(\d+) rolled_back=(\d+) uncertain=0 relayed=\d+ consumed=(\d+) phantoms=0 missing=0`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("dev: no clean summary in\n%s%s", r.stdout, r.stderr)
	}
	committed, _ := strconv.Atoi(m[1])
	consumed, _ := strconv.Atoi(m[3])
	if consumed == 0 || consumed != committed {
		t.Errorf("dev: committed %d, consumed %d", committed, consumed)
	}
	if !strings.Contains(r.stderr, "| relayed ") {
		t.Errorf("dev: no progress line in stderr:\n%s", r.stderr)
	}
}
