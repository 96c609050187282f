package bench

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/relay"
)

// newEnv returns an Env on a fresh database and kfake cluster, the relay
// in-process on a pool of its own.
func newEnv(t testing.TB) (*Env, *testenv.Database) {
	t.Helper()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 6)
	// As `txmsg bench` opens them (config.DB.Connector): arguments
	// interpolated on the client.
	cfg, err := mysql.ParseDSN(d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.InterpolateParams = true
	open := func(n int) *sql.DB {
		db, err := sql.Open("mysql", cfg.FormatDSN())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		db.SetMaxOpenConns(n)
		return db
	}
	return &Env{DB: open(64), RelayDB: open(32), Brokers: k.Addrs, Relay: relay.DefaultConfig()}, d
}

func TestBenchLatencyReadsEveryCommit(t *testing.T) {
	t.Parallel()
	env, _ := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Values past a kibibyte, as --value-bytes allows, fit the business row too.
	res, err := Latency(ctx, env, LatencyConfig{Producers: 4, Rate: 100, Duration: time.Second, Warmup: time.Second, ValueBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []LatencyPhase{res.Outbox, res.DualWrite} {
		if p.Sent == 0 || p.Read != p.Sent || p.Errors != 0 {
			t.Errorf("%s: sent %d, read %d, errors %d: want every commit read", p.Name, p.Sent, p.Read, p.Errors)
		}
		// The warm-up's 100 transactions are not measured, even those
		// that ran late: 25 are due per producer in the measured second.
		if p.Sent > 100+4 {
			t.Errorf("%s: %d transactions measured in 1 s at 100/s: the warm-up's counted too", p.Name, p.Sent)
		}
		if p.CommitToRead.P50 <= 0 || p.CommitToRead.P99 < p.CommitToRead.P50 || p.Tx.P99 < p.Tx.P50 {
			t.Errorf("%s: percentiles %+v %+v", p.Name, p.CommitToRead, p.Tx)
		}
	}
	var sb strings.Builder
	res.Print(&sb)
	if !strings.Contains(sb.String(), "outbox/dual write") {
		t.Errorf("summary lacks the ratios:\n%s", sb.String())
	}
}

func TestBenchLatencyRunsRelaysSideBySide(t *testing.T) {
	t.Parallel()
	env, _ := newEnv(t)
	env.Relays = 2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Latency fails unless both relays hold their share of the shards.
	res, err := Latency(ctx, env, LatencyConfig{Producers: 4, Rate: 100, Duration: time.Second, Warmup: -1})
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Outbox; p.Sent == 0 || p.Read != p.Sent || p.Errors != 0 {
		t.Errorf("outbox: sent %d, read %d, errors %d: want every commit read", p.Sent, p.Read, p.Errors)
	}
	var sb strings.Builder
	res.Print(&sb)
	if res.Relays != 2 || !strings.Contains(sb.String(), "2 relays sharing the shards") {
		t.Errorf("relays %d, summary:\n%s", res.Relays, sb.String())
	}
}

func TestWaitSharedWaitsForEveryRelaysFairShare(t *testing.T) {
	t.Parallel()
	env, d := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for shard := range 16 {
		if _, err := d.DB.ExecContext(ctx, `INSERT INTO txmsg_relay_leases (source, shard, owner, version, expires_at)
VALUES ('outbox', ?, 'a', 1, UTC_TIMESTAMP(6) + INTERVAL 1 HOUR)`, shard); err != nil {
			t.Fatal(err)
		}
	}
	err := env.waitShared(ctx, 2, time.Second)
	if err == nil || !strings.Contains(err.Error(), "1 hold leases, the busiest 16 shards (fair share 8)") {
		t.Fatalf("one relay holding every shard: %v, want a timeout naming the leases", err)
	}
	// A share released but not yet claimed is not shared either.
	if _, err := d.DB.ExecContext(ctx, `UPDATE txmsg_relay_leases SET owner = '' WHERE shard < 8`); err != nil {
		t.Fatal(err)
	}
	if err := env.waitShared(ctx, 2, time.Second); err == nil {
		t.Fatal("half the shards free: waitShared returned, want a timeout")
	}
	if _, err := d.DB.ExecContext(ctx, `UPDATE txmsg_relay_leases SET owner = 'b' WHERE shard < 8`); err != nil {
		t.Fatal(err)
	}
	if err := env.waitShared(ctx, 2, time.Second); err != nil {
		t.Fatalf("8 shards each: %v", err)
	}
}

func TestBenchDrainEmptiesBothTables(t *testing.T) {
	t.Parallel()
	env, d := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Drain(ctx, env, DrainConfig{Rows: []int{1500, 3000}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 2 {
		t.Fatalf("got %d points, want 2", len(res.Points))
	}
	for _, p := range res.Points {
		if p.Relay.Rate <= 0 || p.Naive.Rate <= 0 || p.Relay.Counters.HandlerDelete < int64(p.Rows) {
			t.Errorf("%d rows: %+v", p.Rows, p)
		}
	}
	if err := outboxEmpty(ctx, d.DB, "txmsg_outbox"); err != nil {
		t.Error(err)
	}
	var n int
	if err := d.DB.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?", naiveTable).Scan(&n); err != nil || n != 0 {
		t.Errorf("%s left behind (%d, %v)", naiveTable, n, err)
	}
}

func TestBenchDrainWithRelaysSideBySide(t *testing.T) {
	t.Parallel()
	env, d := newEnv(t)
	env.Relays = 2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Drain(ctx, env, DrainConfig{Rows: []int{2000}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 1 || res.Points[0].Relay.Rate <= 0 || res.Relays != 2 {
		t.Fatalf("result %+v", res)
	}
	var sb strings.Builder
	res.Print(&sb)
	if !strings.Contains(sb.String(), "2 relays drain together") {
		t.Errorf("summary:\n%s", sb.String())
	}
	if err := outboxEmpty(ctx, d.DB, "txmsg_outbox"); err != nil {
		t.Error(err)
	}
}

func TestBenchDrainRefusesAnOutboxWithRows(t *testing.T) {
	t.Parallel()
	env, d := newEnv(t)
	if _, err := d.DB.Exec(`INSERT INTO txmsg_outbox (id, shard, topic, value, created_at) VALUES ('x', 0, 't', '', UTC_TIMESTAMP(6))`); err != nil {
		t.Fatal(err)
	}
	if _, err := Drain(context.Background(), env, DrainConfig{Rows: []int{10}}); err == nil || !strings.Contains(err.Error(), "must be empty") {
		t.Fatalf("Drain = %v, want a refusal", err)
	}
}

// relayBinary builds cmd/txmsg without the race detector, for honest timing
// and memory.
func relayBinary(b *testing.B) []string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "txmsg")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/txmsg/txmsg/cmd/txmsg").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return []string{bin, "relay"}
}

// binaryEnv is newEnv with the relay run as the txmsg binary.
func binaryEnv(b *testing.B) *Env {
	env, d := newEnv(b)
	env.RelayCommand = relayBinary(b)
	env.RelayEnv = []string{"TXMSG_DB_DSN=" + d.DSN, "TXMSG_KAFKA_BROKERS=" + strings.Join(env.Brokers, ","),
		"TXMSG_METRICS_LISTEN=", "TXMSG_LOG_LEVEL=warn", "TXMSG_CONFIG="}
	env.Progress = os.Stderr
	return env
}

// BenchmarkLatency is `txmsg bench latency` against the txmsg relay binary:
// TXMSG_BENCH_RATES (default "1000,3000") msg/s from 32 producers for
// TXMSG_BENCH_SECONDS (default 30) per phase.
func BenchmarkLatency(b *testing.B) {
	seconds := 30
	if s, err := strconv.Atoi(os.Getenv("TXMSG_BENCH_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	rates := []int{1000, 3000}
	if s := os.Getenv("TXMSG_BENCH_RATES"); s != "" {
		rates = atois(b, s)
	}
	for range b.N {
		for _, rate := range rates {
			env := binaryEnv(b)
			res, err := Latency(context.Background(), env, LatencyConfig{Producers: 32, Rate: rate, Duration: time.Duration(seconds) * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			res.Print(os.Stdout)
			r := strconv.Itoa(rate)
			msf := func(d time.Duration) float64 { return float64(d) / 1e6 }
			b.ReportMetric(msf(res.Outbox.CommitToRead.P50), "outbox_p50_ms@"+r)
			b.ReportMetric(msf(res.Outbox.CommitToRead.P99), "outbox_p99_ms@"+r)
			b.ReportMetric(msf(res.DualWrite.CommitToRead.P50), "dual_p50_ms@"+r)
			b.ReportMetric(msf(res.DualWrite.CommitToRead.P99), "dual_p99_ms@"+r)
			b.ReportMetric(float64(res.Outbox.Tx.P99)/float64(res.DualWrite.Tx.P99), "tx_p99_outbox/dual@"+r)
			b.ReportMetric(res.Outbox.Rate, "outbox_tx/s@"+r)
		}
	}
}

// BenchmarkDrain is `txmsg bench drain` against the txmsg relay binary, at
// the backlog sizes of TXMSG_BENCH_ROWS (default "100000,400000,1000000").
func BenchmarkDrain(b *testing.B) {
	rows := []int{100_000, 400_000, 1_000_000}
	if s := os.Getenv("TXMSG_BENCH_ROWS"); s != "" {
		rows = atois(b, s)
	}
	for range b.N {
		env := binaryEnv(b)
		res, err := Drain(context.Background(), env, DrainConfig{Rows: rows})
		if err != nil {
			b.Fatal(err)
		}
		res.Print(os.Stdout)
		for _, p := range res.Points {
			n := strconv.Itoa(p.Rows)
			b.ReportMetric(p.Relay.Rate, "relay_msg/s@"+n)
			b.ReportMetric(p.Naive.Rate, "naive_msg/s@"+n)
			b.ReportMetric(p.Relay.Rate/p.Naive.Rate, "relay/naive@"+n)
			b.ReportMetric(p.RelayPeakRSSMiB, "relay_rss_MiB@"+n)
		}
	}
}

func atois(b *testing.B, s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("%q: want positive numbers, comma-separated", s)
		}
		out = append(out, n)
	}
	return out
}
