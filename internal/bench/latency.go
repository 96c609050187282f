package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/outbox"
)

// LatencyConfig sizes the latency benchmark; zero fields take the defaults
// noted.
type LatencyConfig struct {
	// Producers run transactions at once (default 32).
	Producers int
	// Rate is the total of messages per second over all producers
	// (default 1000).
	Rate int
	// Duration is how long each phase produces and is measured (default
	// 30s).
	Duration time.Duration
	// Warmup is how long each phase produces before it is measured
	// (default 3s; negative: none). The relay's first seconds after its
	// start cost the producers more than its steady state (BENCHMARKS.md);
	// the dual write gets the same warm-up.
	Warmup time.Duration
	// ValueBytes is each message's value size (default 256).
	ValueBytes int
	// Keys is how many distinct keys the messages spread over (default
	// 1000).
	Keys int
	// Topic is the topic written and read (default "txmsg-bench-" and the
	// run's id; deleted at the end when the benchmark named it).
	Topic string
}

func (c LatencyConfig) withDefaults() LatencyConfig {
	if c.Producers <= 0 {
		c.Producers = 32
	}
	if c.Rate <= 0 {
		c.Rate = 1000
	}
	if c.Duration <= 0 {
		c.Duration = 30 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 3 * time.Second
	}
	if c.ValueBytes <= 0 {
		c.ValueBytes = 256
	}
	if c.Keys <= 0 {
		c.Keys = 1000
	}
	return c
}

// LatencyPhase is what one way of publishing measured.
type LatencyPhase struct {
	// Name is "outbox" or "dual write".
	Name string
	// Sent counts committed transactions, Read the records the consumer
	// group read of them, Errors the transactions or produces that failed.
	Sent, Read, Errors int
	// Rate is the transactions committed per second.
	Rate float64
	// CommitToRead is from the producer's COMMIT returning to the record
	// read by the consumer group.
	CommitToRead Percentiles
	// Tx is the producer's transaction, BEGIN to COMMIT returned.
	Tx Percentiles
	// Counters are the server's over the phase (server-wide: other
	// clients of the server count too).
	Counters Counters
	// CPU is the machine's and CPUOf's CPU use over the phase.
	CPU CPUUse
	// CPUOf names the process CPU.Proc measured: "relay" (the relay
	// process), "benchmark" (this one: producers, consumer, and an
	// in-process relay).
	CPUOf string
}

// LatencyResult is the outbox beside its baseline, the dual write (the
// same transaction, then a direct produce after commit).
type LatencyResult struct {
	Config LatencyConfig
	// Relays is how many relays shared the shards in the outbox phase.
	Relays    int
	Outbox    LatencyPhase
	DualWrite LatencyPhase
}

// Print writes the result as a small table with ratios.
func (r LatencyResult) Print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "latency: %d producers, %d msg/s, %v per phase after %v of warm-up, %d-byte values over %d keys",
		c.Producers, c.Rate, c.Duration, max(c.Warmup, 0), c.ValueBytes, c.Keys)
	if r.Relays > 1 {
		fmt.Fprintf(w, ", %d relays sharing the shards", r.Relays)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-11s %9s %9s %13s %13s %10s %10s\n", "", "tx/s", "read", "commit→read", "commit→read", "tx", "tx")
	fmt.Fprintf(w, "%-11s %9s %9s %13s %13s %10s %10s\n", "", "", "", "p50", "p99", "p50", "p99")
	for _, p := range []LatencyPhase{r.Outbox, r.DualWrite} {
		fmt.Fprintf(w, "%-11s %9.0f %9d %13s %13s %10s %10s\n", p.Name, p.Rate, p.Read,
			ms(p.CommitToRead.P50), ms(p.CommitToRead.P99), ms(p.Tx.P50), ms(p.Tx.P99))
		if p.Sent > 0 {
			fmt.Fprintf(w, "%-11s per message: %.1f statements, %.1f commits (server-wide)\n", "",
				float64(p.Counters.Statements)/float64(p.Sent), float64(p.Counters.Commits)/float64(p.Sent))
			fmt.Fprintf(w, "%-11s %s\n", "", p.CPU.perMessage(p.CPUOf, p.Sent))
		}
		if p.Errors > 0 || p.Read < p.Sent {
			fmt.Fprintf(w, "%-11s %d failed, %d of %d committed not read\n", "", p.Errors, p.Sent-p.Read, p.Sent)
		}
	}
	o, d := r.Outbox, r.DualWrite
	fmt.Fprintf(w, "outbox/dual write: commit→read p50 %s, p99 %s; tx p99 %s (target ≤ 1.3×)\n",
		ratio(o.CommitToRead.P50, d.CommitToRead.P50), ratio(o.CommitToRead.P99, d.CommitToRead.P99), ratio(o.Tx.P99, d.Tx.P99))
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + "ms" }

func ratio[T ~int64 | float64](a, b T) string {
	if b == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(a)/float64(b), 'f', 2, 64) + "×"
}

// Bench-owned tables.
const (
	createOrders = `CREATE TABLE IF NOT EXISTS txmsg_bench_orders (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  customer VARCHAR(64) NOT NULL,
  amount INT NOT NULL,
  note MEDIUMBLOB NULL
) ENGINE=InnoDB`
	insertOrder = `INSERT INTO txmsg_bench_orders (customer, amount, note) VALUES (?, ?, ?)`
)

// Latency runs the latency benchmark: a consumer group reads the topic
// while first the outbox (with the relay running) and then the dual write
// run cfg.Producers transactions at cfg.Rate for cfg.Duration each.
func Latency(ctx context.Context, env *Env, cfg LatencyConfig) (LatencyResult, error) {
	if err := env.check(); err != nil {
		return LatencyResult{}, err
	}
	cfg = cfg.withDefaults()
	run := runID()
	owned := cfg.Topic == ""
	if owned {
		cfg.Topic = "txmsg-bench-" + run
	}
	res := LatencyResult{Config: cfg, Relays: env.relays()}
	if _, err := env.DB.ExecContext(ctx, createOrders); err != nil {
		return res, fmt.Errorf("bench: create txmsg_bench_orders: %w", err)
	}
	w, err := kafkax.NewWriter(env.Brokers, kafkax.WriterConfig{Transport: kafkax.NewTransport(env.Security)})
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	defer w.Close()
	l := &latencyRun{env: env, cfg: cfg, run: run, w: w, value: make([]byte, cfg.ValueBytes), reads: map[string]time.Time{}}
	// The dual write's warm-up record creates the topic, so the group
	// joins a topic that exists.
	if err := l.produce(ctx, run+"-w-d", "warmup"); err != nil {
		return res, err
	}
	r, err := kafkax.NewGroupReader(env.Brokers, kafkax.ReaderConfig{Group: "txmsg-bench-" + run, Topics: []string{cfg.Topic},
		MaxWait: 100 * time.Millisecond, Security: env.Security})
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	rctx, stopReader := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error { return l.read(rctx, r) })
	defer func() {
		stopReader()
		_ = g.Wait()
		r.Close()
		if owned {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := env.deleteTopics(dctx, cfg.Topic); err != nil {
				env.logger().Warn("bench: topic left behind", "topic", cfg.Topic, "error", err)
			}
		}
	}()
	if err := l.waitRead(ctx, run+"-w-d", time.Minute); err != nil {
		return res, fmt.Errorf("bench: the consumer group did not read the topic: %w", err)
	}

	rl, err := env.startRelay(ctx)
	if err != nil {
		return res, err
	}
	err = outbox.Publish(ctx, env.DB, txmsg.Message{ID: run + "-w-o", Topic: cfg.Topic, Value: l.value})
	if err == nil {
		err = l.waitRead(ctx, run+"-w-o", time.Minute)
	}
	if n := env.relays(); err == nil && n > 1 {
		err = env.waitShared(ctx, n, max(6*env.Relay.WithDefaults().LeaseTTL, 30*time.Second))
	}
	if err == nil {
		res.Outbox, err = l.phase(ctx, "outbox", "o", rl.pids)
	}
	if serr := rl.stop(); err == nil && serr != nil {
		err = serr
	}
	if err != nil {
		return res, err
	}
	res.DualWrite, err = l.phase(ctx, "dual write", "d", nil)
	return res, err
}

// latencyRun is one run of the latency benchmark.
type latencyRun struct {
	env   *Env
	cfg   LatencyConfig
	run   string
	w     *kafka.Writer
	value []byte

	mu sync.Mutex
	// reads maps the ids read to when.
	reads map[string]time.Time
	// readO and readD count the records read of the outbox and the dual
	// write.
	readO, readD atomic.Int64
}

// sample is one committed transaction.
type sample struct {
	id     string
	commit time.Time
	tx     time.Duration
}

// read records when each record of the run is read, until ctx ends.
func (l *latencyRun) read(ctx context.Context, r *kafka.Reader) error {
	prefix := l.run + "-"
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("bench: read: %w", err)
		}
		now := time.Now()
		for _, h := range m.Headers {
			id := string(h.Value)
			if h.Key != txmsg.HeaderID || !strings.HasPrefix(id, prefix) {
				continue
			}
			l.mu.Lock()
			l.reads[id] = now
			l.mu.Unlock()
			switch {
			case strings.HasPrefix(id, prefix+"o-"):
				l.readO.Add(1)
			case strings.HasPrefix(id, prefix+"d-"):
				l.readD.Add(1)
			}
		}
	}
}

// waitRead waits until id was read.
func (l *latencyRun) waitRead(ctx context.Context, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		l.mu.Lock()
		_, ok := l.reads[id]
		l.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("record %s not read within %v", id, timeout)
		case <-t.C:
		}
	}
}

// produce writes one record directly, as the dual write does.
func (l *latencyRun) produce(ctx context.Context, id, key string) error {
	err := l.w.WriteMessages(ctx, kafka.Message{Topic: l.cfg.Topic, Key: []byte(key), Value: l.value,
		Headers: []kafka.Header{{Key: txmsg.HeaderID, Value: []byte(id)}}})
	if err != nil {
		return fmt.Errorf("bench: produce to %s: %w", l.cfg.Topic, err)
	}
	return nil
}

// phase runs the producers of one way of publishing, letter "o" (outbox)
// or "d" (dual write), then waits for their records to be read. relayPIDs
// are the relay processes' (none, or in-process), whose CPU is measured.
func (l *latencyRun) phase(ctx context.Context, name, letter string, relayPIDs []int) (LatencyPhase, error) {
	cfg := l.cfg
	p := LatencyPhase{Name: name, CPUOf: "benchmark"}
	switch {
	case len(relayPIDs) == 1:
		p.CPUOf = "relay"
	case len(relayPIDs) > 1:
		p.CPUOf = strconv.Itoa(len(relayPIDs)) + " relays"
	}
	counter := &l.readO
	if letter == "d" {
		counter = &l.readD
	}
	samples := make([][]sample, cfg.Producers)
	// all counts the transactions committed, warm-up included; sent those
	// measured.
	var all, sent, failed atomic.Int64
	var firstErr atomic.Value
	interval := time.Duration(int64(time.Second) * int64(cfg.Producers) / int64(cfg.Rate))
	warm := time.Now()
	start := warm.Add(max(cfg.Warmup, 0))
	end := start.Add(cfg.Duration)
	pctx, stopProgress := context.WithCancel(ctx)
	var pg errgroup.Group
	pg.Go(func() error {
		l.progress(pctx, name, warm, start, &all, counter)
		return nil
	})
	defer func() {
		stopProgress()
		_ = pg.Wait()
	}()
	var g errgroup.Group
	for i := range cfg.Producers {
		g.Go(func() error {
			// Producers start spread over one interval, then keep their
			// schedule: one that falls behind sends back to back, and all
			// stop at the end, so Rate says what the database sustained.
			next := warm.Add(interval * time.Duration(i) / time.Duration(cfg.Producers))
			for n := 0; ; n++ {
				if !sleepUntil(ctx, next) || !next.Before(end) || !time.Now().Before(end) {
					return nil
				}
				// A transaction belongs to the warm-up or the measurement by
				// when it was due, however late it ran.
				measured := !next.Before(start)
				next = next.Add(interval)
				id := l.run + "-" + letter + "-" + strconv.Itoa(i) + "-" + strconv.Itoa(n)
				key := "customer-" + strconv.Itoa((i*7919+n)%cfg.Keys)
				s, err := l.transaction(ctx, letter, id, key)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				all.Add(1)
				if measured {
					sent.Add(1)
					samples[i] = append(samples[i], s)
				}
			}
		})
	}
	// The counters and the CPU cover the measured part.
	var before Counters
	var cpu cpuMark
	err := errors.New("bench: stopped during the warm-up")
	if sleepUntil(ctx, start) {
		before, err = readStatus(ctx, l.env.DB)
		cpu = markCPU(relayPIDs)
	}
	_ = g.Wait()
	if err != nil {
		return p, err
	}
	took := time.Since(start)
	p.CPU = cpuSince(cpu, relayPIDs)
	after, err := readStatus(ctx, l.env.DB)
	if err != nil {
		return p, err
	}
	p.Counters = after.since(before)
	// Wait for the stragglers: until all are read, or nothing more came
	// for 30 s (longer than the relay's longest retry backoff by default).
	last, lastAt := counter.Load(), time.Now()
	for counter.Load() < all.Load() && time.Since(lastAt) < 30*time.Second && ctx.Err() == nil {
		sleepUntil(ctx, time.Now().Add(20*time.Millisecond))
		if n := counter.Load(); n != last {
			last, lastAt = n, time.Now()
		}
	}
	if err := ctx.Err(); err != nil {
		return p, err
	}
	var lat, tx []time.Duration
	l.mu.Lock()
	for _, ss := range samples {
		for _, s := range ss {
			tx = append(tx, s.tx)
			if at, ok := l.reads[s.id]; ok {
				lat = append(lat, max(at.Sub(s.commit), 0))
			}
		}
	}
	l.mu.Unlock()
	p.Sent, p.Read, p.Errors = int(sent.Load()), len(lat), int(failed.Load())
	p.Rate = float64(p.Sent) / took.Seconds()
	p.CommitToRead, p.Tx = percentiles(lat), percentiles(tx)
	if p.Errors > 0 {
		l.env.logger().Warn("bench: transactions failed", "phase", name, "failed", p.Errors, "first", firstErr.Load())
	}
	if p.Sent == 0 {
		return p, fmt.Errorf("bench: %s: no transaction committed (first error: %v)", name, firstErr.Load())
	}
	return p, nil
}

// transaction runs one producer transaction: the business INSERT, with
// outbox.Publish ("o"), or followed by a direct produce after the commit
// ("d").
func (l *latencyRun) transaction(ctx context.Context, letter, id, key string) (sample, error) {
	begin := time.Now()
	tx, err := l.env.DB.BeginTx(ctx, nil)
	if err != nil {
		return sample{}, fmt.Errorf("bench: begin: %w", err)
	}
	if _, err := tx.ExecContext(ctx, insertOrder, key, 42, l.value); err != nil {
		return sample{}, errors.Join(fmt.Errorf("bench: insert order: %w", err), tx.Rollback())
	}
	if letter == "o" {
		if err := outbox.Publish(ctx, tx, txmsg.Message{ID: id, Topic: l.cfg.Topic, Key: []byte(key), Value: l.value}); err != nil {
			return sample{}, errors.Join(err, tx.Rollback())
		}
	}
	if err := tx.Commit(); err != nil {
		return sample{}, fmt.Errorf("bench: commit: %w", err)
	}
	s := sample{id: id, commit: time.Now()}
	s.tx = s.commit.Sub(begin)
	if letter == "d" {
		if err := l.produce(ctx, id, key); err != nil {
			return sample{}, err
		}
	}
	return s, nil
}

// progress prints a line a second until ctx ends: the phase began at warm,
// its measurement at start.
func (l *latencyRun) progress(ctx context.Context, name string, warm, start time.Time, sent, read *atomic.Int64) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s, el := sent.Load(), time.Since(warm)
		what := "warming up"
		if time.Now().After(start) {
			what = "measuring"
		}
		l.env.progressf("latency %-10s %-10s %5.0fs/%v  committed %d (%.0f/s)  read %d",
			name, what, el.Seconds(), start.Sub(warm)+l.cfg.Duration, s, float64(s)/el.Seconds(), read.Load())
	}
}

// sleepUntil waits until t; it returns false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
