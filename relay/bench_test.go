package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// benchN is the backlog size the drain benchmark uses (TXMSG_BENCH_N).
func benchN() int {
	if n, err := strconv.Atoi(os.Getenv("TXMSG_BENCH_N")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

// fillBacklog inserts n outbox rows: 256-byte values over 50 keys.
func fillBacklog(b *testing.B, db *sql.DB, topic string, n int) {
	b.Helper()
	ctx := context.Background()
	value := make([]byte, 256)
	for i := 0; i < n; i += 1000 {
		msgs := make([]txmsg.Message, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			msgs = append(msgs, txmsg.Message{Topic: topic, Key: []byte("key-" + strconv.Itoa(j%50)), Value: value})
		}
		if err := outbox.Publish(ctx, db, msgs...); err != nil {
			b.Fatal(err)
		}
	}
}

// waitEmpty polls, cheaply, until txmsg_outbox has no row left.
func waitEmpty(b *testing.B, db *sql.DB) {
	b.Helper()
	for {
		var one int
		err := db.QueryRow("SELECT 1 FROM txmsg_outbox LIMIT 1").Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return
		}
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawProduce is the ceiling: kafka-go writing n messages in batches of 500
// from 16 goroutines (the relay's shard count), acks=all, Murmur2.
func rawProduce(b *testing.B, brokers []string, topic string, n int) time.Duration {
	b.Helper()
	w, err := kafkax.NewWriter(brokers, kafkax.WriterConfig{BatchSize: 500})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	value := make([]byte, 256)
	start := time.Now()
	var wg sync.WaitGroup
	per := n / 16
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i += 500 {
				msgs := make([]kafka.Message, 0, 500)
				for j := i; j < min(i+500, per); j++ {
					msgs = append(msgs, kafka.Message{Topic: topic, Key: []byte("key-" + strconv.Itoa((g*per+j)%50)), Value: value})
				}
				if err := w.WriteMessages(context.Background(), msgs...); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// naiveDrain is the floor: one loop of BEGIN; SELECT … FOR UPDATE SKIP
// LOCKED; produce; DELETE; COMMIT over table.
func naiveDrain(b *testing.B, db *sql.DB, brokers []string, table string) time.Duration {
	b.Helper()
	w, err := kafkax.NewWriter(brokers, kafkax.WriterConfig{BatchSize: 500})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	start := time.Now()
	for {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts
FROM `+table+` ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED`)
		if err != nil {
			b.Fatal(err)
		}
		batch, err := ScanRows(rows, 0)
		if err != nil {
			b.Fatal(err)
		}
		if len(batch) == 0 {
			_ = tx.Rollback()
			return time.Since(start)
		}
		msgs := make([]kafka.Message, len(batch))
		for i, r := range batch {
			msgs[i] = kafka.Message{Topic: r.Topic, Key: r.Key, Value: r.Value,
				Headers: []kafka.Header{{Key: txmsg.HeaderID, Value: []byte(r.ID)}}}
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
		args := make([]any, len(batch))
		for i, r := range batch {
			args[i] = r.Seq
		}
		in := strings.TrimSuffix(strings.Repeat("?,", len(batch)), ",")
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE seq IN (`+in+`)`, args...); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// buildRelay compiles cmd/txmsg without the race detector, for honest
// timing and memory.
func buildRelay(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "txmsg")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/txmsg/txmsg/cmd/txmsg").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// peakRSS reads a process's VmHWM in MiB.
func peakRSS(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkRelayDrain drains a backlog of N outbox rows (256-byte values, 50
// keys) in one run, same kfake broker and MariaDB: raw kafka-go produce
// (ceiling); the naive SKIP LOCKED loop (floor) on txmsg_outbox itself and on
// a copy keyed by seq alone, the layout a naive outbox would have; and the
// txmsg relay binary (peak RSS reported too).
func BenchmarkRelayDrain(b *testing.B) {
	n := benchN()
	bin := buildRelay(b)
	for range b.N {
		d := testenv.NewDB(b)
		k := testenv.NewKafka(b, 6)

		raw := rawProduce(b, k.Addrs, "raw", n)

		fillBacklog(b, d.DB, "naive", n)
		for _, q := range []string{"CREATE TABLE naive_outbox AS SELECT * FROM txmsg_outbox", "ALTER TABLE naive_outbox ADD PRIMARY KEY (seq)"} {
			if _, err := d.DB.Exec(q); err != nil {
				b.Fatal(err)
			}
		}
		naive := naiveDrain(b, d.DB, k.Addrs, "txmsg_outbox")
		naiveSeq := naiveDrain(b, d.DB, k.Addrs, "naive_outbox")

		fillBacklog(b, d.DB, "relay", n)
		cmd := exec.Command(bin, "relay", "--dsn", d.DSN, "--brokers", strings.Join(k.Addrs, ","),
			"--metrics.listen", "", "--log.level", "warn")
		cmd.Stderr = os.Stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		waitEmpty(b, d.DB)
		took := time.Since(start)
		rss := peakRSS(cmd.Process.Pid)
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()

		rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
		b.ReportMetric(rate(raw), "raw_msg/s")
		b.ReportMetric(rate(naive), "naive_msg/s")
		b.ReportMetric(rate(took), "relay_msg/s")
		b.ReportMetric(rate(naiveSeq), "naive_seqpk_msg/s")
		b.ReportMetric(rate(took)/rate(naive), "relay/naive")
		b.ReportMetric(rate(took)/rate(naiveSeq), "relay/naive_seqpk")
		b.ReportMetric(rate(took)/rate(raw), "relay/raw")
		b.ReportMetric(rss, "relay_peak_rss_MiB")
	}
}

// BenchmarkRelayProducerOverhead compares a business transaction alone, the
// same plus outbox.Publish of one message, and the same plus a second
// business INSERT (the budget: one extra INSERT).
func BenchmarkRelayProducerOverhead(b *testing.B) {
	d := testenv.NewDB(b)
	ctx := context.Background()
	if _, err := d.DB.Exec(`CREATE TABLE bench_orders (id BIGINT AUTO_INCREMENT PRIMARY KEY,
customer VARCHAR(64) NOT NULL, amount INT NOT NULL, note VARBINARY(256))`); err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 256)
	insert := func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO bench_orders (customer, amount, note) VALUES (?, ?, ?)", "c", 42, value)
		return err
	}
	variants := []struct {
		name  string
		extra func(tx *sql.Tx) error
	}{
		{"plain", func(*sql.Tx) error { return nil }},
		{"outbox", func(tx *sql.Tx) error {
			return outbox.Publish(ctx, tx, txmsg.Message{Topic: "orders", Key: []byte("c"), Value: value})
		}},
		{"two_inserts", insert},
	}
	const txs, workers = 2000, 8
	for range b.N {
		rates := map[string]float64{}
		for _, v := range variants {
			start := time.Now()
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range txs / workers {
						tx, err := d.DB.BeginTx(ctx, nil)
						if err != nil {
							b.Error(err)
							return
						}
						if err := insert(tx); err != nil {
							b.Error(err)
						}
						if err := v.extra(tx); err != nil {
							b.Error(err)
						}
						if err := tx.Commit(); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			rates[v.name] = txs / time.Since(start).Seconds()
		}
		b.ReportMetric(rates["plain"], "plain_tx/s")
		b.ReportMetric(rates["outbox"], "outbox_tx/s")
		b.ReportMetric(rates["two_inserts"], "two_inserts_tx/s")
		b.ReportMetric(rates["outbox"]/rates["plain"], "outbox/plain")
		b.ReportMetric(rates["outbox"]/rates["two_inserts"], "outbox/two_inserts")
	}
}

// BenchmarkRelayLatency measures commit → consumed latency at a steady
// 1,000 msg/s for TXMSG_BENCH_SECONDS (default 30), beside the latency of a
// raw kafka-go produce → consume at the same rate.
func BenchmarkRelayLatency(b *testing.B) {
	seconds := 30
	if s, err := strconv.Atoi(os.Getenv("TXMSG_BENCH_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	for range b.N {
		d := testenv.NewDB(b)
		k := testenv.NewKafka(b, 6)
		eng, err := New(d.DB, Config{Brokers: k.Addrs})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = eng.Run(ctx)
		}()
		for !eng.Ready() {
			time.Sleep(10 * time.Millisecond)
		}
		w, err := kafkax.NewWriter(k.Addrs, kafkax.WriterConfig{})
		if err != nil {
			b.Fatal(err)
		}
		relayLat := measureLatency(b, k.Addrs, "lat-relay", seconds, func(id string, v []byte) error {
			return outbox.Publish(context.Background(), d.DB, txmsg.Message{ID: id, Topic: "lat-relay", Key: []byte(id[len(id)-2:]), Value: v})
		})
		rawLat := measureLatency(b, k.Addrs, "lat-raw", seconds, func(id string, v []byte) error {
			return w.WriteMessages(context.Background(), kafka.Message{Topic: "lat-raw", Key: []byte(id[len(id)-2:]), Value: v,
				Headers: []kafka.Header{{Key: txmsg.HeaderID, Value: []byte(id)}}})
		})
		w.Close()
		cancel()
		<-done
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(ms(relayLat[0]), "relay_p50_ms")
		b.ReportMetric(ms(relayLat[1]), "relay_p99_ms")
		b.ReportMetric(ms(rawLat[0]), "raw_p50_ms")
		b.ReportMetric(ms(rawLat[1]), "raw_p99_ms")
	}
}

// measureLatency sends 1,000 msg/s for seconds through send (from 4
// goroutines) and returns the p50 and p99 of send start → consumed (for the
// relay, send is the producer's transaction, commit included).
func measureLatency(b *testing.B, brokers []string, topic string, seconds int, send func(id string, v []byte) error) [2]time.Duration {
	b.Helper()
	var sent sync.Map
	total := 1000 * seconds
	r, err := kafkax.NewGroupReader(brokers, kafkax.ReaderConfig{Group: "lat-" + topic, Topics: []string{topic}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	recv := make(map[string]time.Time, total)
	readDone := make(chan struct{})
	first := make(chan struct{})
	var firstOnce sync.Once
	go func() {
		defer close(readDone)
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+60)*time.Second)
		defer cancel()
		for len(recv) < total {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				return
			}
			now := time.Now()
			firstOnce.Do(func() { close(first) })
			for _, h := range m.Headers {
				if h.Key == txmsg.HeaderID && !strings.Contains(string(h.Value), "warmup") {
					recv[string(h.Value)] = now
				}
			}
		}
	}()
	value := make([]byte, 256)
	// A warm-up message waits out the group join, which would otherwise
	// count as latency.
	if err := send(topic+"-warmup-00", value); err != nil {
		b.Fatal(err)
	}
	select {
	case <-first:
	case <-time.After(60 * time.Second):
		b.Fatal("the reader never joined")
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(4 * time.Millisecond)
			defer tick.Stop()
			for i := range total / 4 {
				<-tick.C
				id := fmt.Sprintf("%s-%d-%06d", topic, g, i)
				sent.Store(id, time.Now())
				if err := send(id, value); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	<-readDone
	lats := make([]time.Duration, 0, len(recv))
	for id, at := range recv {
		if t0, ok := sent.Load(id); ok {
			lats = append(lats, at.Sub(t0.(time.Time)))
		}
	}
	if len(lats) < total {
		b.Fatalf("%d of %d messages consumed", len(lats), total)
	}
	slices.Sort(lats)
	return [2]time.Duration{lats[len(lats)/2], lats[len(lats)*99/100]}
}
