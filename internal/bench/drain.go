package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/outbox"
	"github.com/txmsg/txmsg/relay"
)

// DrainConfig sizes the drain benchmark; zero fields take the defaults
// noted.
type DrainConfig struct {
	// Rows are the backlog sizes drained, one after the other (default
	// 100,000).
	Rows []int
	// ValueBytes is each message's value size (default 256).
	ValueBytes int
	// Keys is how many distinct keys the messages spread over (default 50).
	Keys int
	// NaiveBatch is the naive loop's batch (default 500).
	NaiveBatch int
}

func (c DrainConfig) withDefaults() DrainConfig {
	if len(c.Rows) == 0 {
		c.Rows = []int{100_000}
	}
	if c.ValueBytes <= 0 {
		c.ValueBytes = 256
	}
	if c.Keys <= 0 {
		c.Keys = 50
	}
	if c.NaiveBatch <= 0 {
		c.NaiveBatch = 500
	}
	return c
}

// DrainRun is one drain of a backlog.
type DrainRun struct {
	Took time.Duration
	// Rate is messages per second.
	Rate float64
	// Counters are the server's over the drain.
	Counters Counters
	// CPU is the machine's and the draining process's CPU use over the
	// drain: the relay process, or this one (the naive loop, an
	// in-process relay).
	CPU CPUUse
}

// DrainPoint is the relay and the naive loop draining one backlog size.
type DrainPoint struct {
	Rows  int
	Relay DrainRun
	Naive DrainRun
	// RelayPeakRSSMiB is the relay process's peak RSS (VmHWM) while it
	// drained, the largest of the relays' when several ran; in-process it
	// is the benchmark's own, relays included.
	RelayPeakRSSMiB float64
}

// DrainResult is every backlog size drained.
type DrainResult struct {
	Config DrainConfig
	// InProcess says the relay ran inside the benchmark's process.
	InProcess bool
	// Relays is how many relays drained together.
	Relays int
	Points []DrainPoint
}

// Print writes the result as a table with ratios, and the counters.
func (r DrainResult) Print(w io.Writer) {
	fmt.Fprintf(w, "drain: %d-byte values over %d keys; naive loop: SELECT … ORDER BY seq LIMIT %d FOR UPDATE SKIP LOCKED → produce → DELETE\n",
		r.Config.ValueBytes, r.Config.Keys, r.Config.NaiveBatch)
	rss, relay := "relay peak RSS", "relay"
	if r.Relays > 1 {
		fmt.Fprintf(w, "%d relays drain together, sharing the shards from their start\n", r.Relays)
		rss, relay = "largest relay peak RSS", strconv.Itoa(r.Relays)+" relays"
	}
	if r.InProcess {
		rss, relay = "peak RSS (in-process)", "benchmark ("+relay+" in it)"
	}
	fmt.Fprintf(w, "%10s %12s %12s %12s %24s\n", "rows", "relay msg/s", "naive msg/s", "relay/naive", rss)
	for _, p := range r.Points {
		fmt.Fprintf(w, "%10d %12.0f %12.0f %12s %20.1f MiB\n", p.Rows, p.Relay.Rate, p.Naive.Rate,
			ratio(p.Relay.Rate, p.Naive.Rate), p.RelayPeakRSSMiB)
	}
	if n := len(r.Points); n > 1 {
		fmt.Fprintf(w, "relay largest/smallest backlog: %s (target ≥ 0.75×)\n", ratio(r.Points[n-1].Relay.Rate, r.Points[0].Relay.Rate))
	}
	for _, p := range r.Points {
		fmt.Fprintf(w, "%d rows, relay: %v; %s\n", p.Rows, p.Relay.Counters, p.Relay.CPU.perMessage(relay, p.Rows))
		fmt.Fprintf(w, "%d rows, naive: %v; %s\n", p.Rows, p.Naive.Counters, p.Naive.CPU.perMessage("naive loop", p.Rows))
	}
}

// naiveTable is the naive loop's copy of the outbox's shape.
const naiveTable = "txmsg_bench_naive"

// Drain fills the outbox with each backlog size of cfg.Rows and drains it
// with the relay, then fills a table of the same shape and drains it with
// the naive loop. The outbox must be empty at the start: the benchmark
// refuses to run beside real messages.
func Drain(ctx context.Context, env *Env, cfg DrainConfig) (DrainResult, error) {
	if err := env.check(); err != nil {
		return DrainResult{}, err
	}
	cfg = cfg.withDefaults()
	res := DrainResult{Config: cfg, InProcess: len(env.RelayCommand) == 0, Relays: env.relays()}
	if err := outboxEmpty(ctx, env.DB, "txmsg_outbox"); err != nil {
		return res, fmt.Errorf("bench: txmsg_outbox must be empty to measure a drain: %w", err)
	}
	if _, err := env.DB.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+naiveTable+" LIKE txmsg_outbox"); err != nil {
		return res, fmt.Errorf("bench: create %s: %w", naiveTable, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = env.DB.ExecContext(dctx, "DROP TABLE IF EXISTS "+naiveTable)
	}()
	shards := env.Relay.Shards
	if shards == 0 {
		shards = relay.DefaultConfig().Shards
	}
	run := runID()
	var topics []string
	defer func() {
		if len(topics) == 0 {
			return
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := env.deleteTopics(dctx, topics...); err != nil {
			env.logger().Warn("bench: topics left behind", "topics", strings.Join(topics, ","), "error", err)
		}
	}()
	d := &drainRun{env: env, cfg: cfg, value: make([]byte, cfg.ValueBytes)}
	for _, n := range cfg.Rows {
		p := DrainPoint{Rows: n}
		topic := "txmsg-bench-" + run + "-relay-" + strconv.Itoa(n)
		topics = append(topics, topic)
		pub, err := outbox.NewPublisher(outbox.WithShards(shards))
		if err != nil {
			return res, fmt.Errorf("bench: %w", err)
		}
		if err := d.fill(ctx, pub, topic, n); err != nil {
			return res, err
		}
		if p.Relay, p.RelayPeakRSSMiB, err = d.relay(ctx, topic, n); err != nil {
			return res, err
		}
		topic = "txmsg-bench-" + run + "-naive-" + strconv.Itoa(n)
		topics = append(topics, topic)
		if err := d.fill(ctx, pub, topic, n); err != nil {
			return res, err
		}
		// The outbox SDK writes txmsg_outbox only: swap the filled table and
		// the (empty) naive one, in one statement, no relay running.
		if _, err := env.DB.ExecContext(ctx, "RENAME TABLE txmsg_outbox TO txmsg_bench_swap, "+naiveTable+
			" TO txmsg_outbox, txmsg_bench_swap TO "+naiveTable); err != nil {
			return res, fmt.Errorf("bench: move the naive loop's rows to %s: %w", naiveTable, err)
		}
		if p.Naive, err = d.naive(ctx, n); err != nil {
			return res, err
		}
		res.Points = append(res.Points, p)
		env.progressf("drain %d rows: relay %.0f msg/s, naive %.0f msg/s (%s)", n, p.Relay.Rate, p.Naive.Rate, ratio(p.Relay.Rate, p.Naive.Rate))
	}
	return res, nil
}

// outboxEmpty fails when table holds a row.
func outboxEmpty(ctx context.Context, db *sql.DB, table string) error {
	var one int
	err := db.QueryRowContext(ctx, "SELECT 1 FROM "+table+" LIMIT 1").Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("read %s: %w", table, err)
	}
	return fmt.Errorf("%s holds rows", table)
}

// drainRun is one run of the drain benchmark.
type drainRun struct {
	env   *Env
	cfg   DrainConfig
	value []byte
}

// fill creates topic and inserts n messages to it through pub, 1,000 per
// statement from four connections.
func (d *drainRun) fill(ctx context.Context, pub *outbox.Publisher, topic string, n int) error {
	if err := d.createTopic(ctx, topic); err != nil {
		return err
	}
	const per = 1000
	var next, done atomic.Int64
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	var pg errgroup.Group
	pg.Go(func() error {
		d.every(pctx, func(el time.Duration) {
			d.env.progressf("drain %d rows: filling %s %d/%d (%.0fs)", n, topic, done.Load(), n, el.Seconds())
		})
		return nil
	})
	defer func() { stop(); _ = pg.Wait() }()
	g, gctx := errgroup.WithContext(ctx)
	for range 4 {
		g.Go(func() error {
			for {
				from := int(next.Add(per)) - per
				if from >= n {
					return nil
				}
				msgs := make([]txmsg.Message, 0, per)
				for j := from; j < min(from+per, n); j++ {
					msgs = append(msgs, txmsg.Message{Topic: topic, Key: []byte("key-" + strconv.Itoa(j%d.cfg.Keys)), Value: d.value})
				}
				if err := pub.Publish(gctx, d.env.DB, msgs...); err != nil {
					return fmt.Errorf("bench: fill: %w", err)
				}
				done.Add(int64(len(msgs)))
			}
		})
	}
	return g.Wait()
}

// every calls f with the time elapsed each second until ctx ends.
func (d *drainRun) every(ctx context.Context, f func(time.Duration)) {
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(time.Since(start))
		}
	}
}

// measure runs drain while sampling the history list length, and returns
// its duration, the server's counters and the CPU use over it. pids, called
// once drain returned, names the relay processes drain started (none: the
// work ran in this process).
func (d *drainRun) measure(ctx context.Context, label string, n int, pids func() []int, drain func(context.Context) error) (DrainRun, error) {
	db := d.env.DB
	before, err := readStatus(ctx, db)
	if err != nil {
		return DrainRun{}, err
	}
	var history atomic.Int64
	history.Store(historyLength(ctx, db))
	sctx, stop := context.WithCancel(ctx)
	var sg errgroup.Group
	sg.Go(func() error {
		d.every(sctx, func(el time.Duration) {
			h := historyLength(sctx, db)
			if h > history.Load() {
				history.Store(h)
			}
			d.env.progressf("drain %d rows: %s draining (%.0fs), history list length %d", n, label, el.Seconds(), h)
		})
		return nil
	})
	cpu := markCPU(nil)
	start := time.Now()
	err = drain(ctx)
	took := time.Since(start)
	p := pids()
	if len(p) > 0 {
		cpu.proc = 0 // the processes started within the drain
	}
	use := cpuSince(cpu, p)
	stop()
	_ = sg.Wait()
	if err != nil {
		return DrainRun{}, err
	}
	after, err := readStatus(ctx, db)
	if err != nil {
		return DrainRun{}, err
	}
	after.HistoryListMax = history.Load()
	return DrainRun{Took: took, Rate: float64(n) / took.Seconds(), Counters: after.since(before), CPU: use}, nil
}

// relay drains the outbox's n rows of topic with the relay and returns the
// run and the relay's peak RSS.
func (d *drainRun) relay(ctx context.Context, topic string, n int) (DrainRun, float64, error) {
	inProcess := len(d.env.RelayCommand) == 0
	if inProcess {
		resetPeakRSS()
	}
	var rss float64
	var rl *relayRun
	lasts, err := lastOfShards(ctx, d.env.DB)
	if err != nil {
		return DrainRun{}, 0, err
	}
	pids := func() []int {
		if rl == nil {
			return nil
		}
		return rl.pids
	}
	run, err := d.measure(ctx, "relay", n, pids, func(ctx context.Context) error {
		var err error
		if rl, err = d.env.startRelay(ctx); err != nil {
			return err
		}
		// Kafka's offsets say when every row went out, without a query on
		// the outbox whose cost grows with the rows deleted; then the last
		// row of each shard must be marked (a shard's rounds mark in
		// order), read by primary key: a scan of the table would step over
		// every delete-marked row purge has not removed yet.
		if err := d.waitTopic(ctx, topic, int64(n)); err != nil {
			return err
		}
		err = d.waitMarked(ctx, lasts)
		if len(rl.pids) == 0 {
			rss = peakRSS(0)
		}
		for _, pid := range rl.pids {
			rss = max(rss, peakRSS(pid))
		}
		return err
	})
	// The relay's shutdown is not part of the drain.
	if rl != nil {
		err = errors.Join(err, rl.stop())
	}
	return run, rss, err
}

// waitTopic waits until topic holds n records.
func (d *drainRun) waitTopic(ctx context.Context, topic string, n int64) error {
	c, done := d.client()
	defer done()
	for {
		got, err := topicEnd(ctx, c, topic)
		if err == nil && got >= n {
			return nil
		}
		if !sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) {
			return ctx.Err()
		}
	}
}

// client returns a Kafka client of its own, whose metadata lasts one poll,
// and the function that closes its connections: kafka-go answers metadata
// requests from a cache it refreshes every 6 s by default, so a topic
// created since would read as missing, or empty, for up to 6 s.
func (d *drainRun) client() (*kafka.Client, func()) {
	t := kafkax.NewTransport(d.env.Security)
	if t == nil {
		t = &kafka.Transport{}
	}
	t.MetadataTTL = 20 * time.Millisecond
	return &kafka.Client{Addr: kafka.TCP(d.env.Brokers...), Timeout: 10 * time.Second, Transport: t}, t.CloseIdleConnections
}

// createTopic creates topic with the cluster's default partitions and
// waits until its metadata lists them, so that neither drain counts the
// creation: the naive loop's writer would wait seconds on it, retrying.
func (d *drainRun) createTopic(ctx context.Context, topic string) error {
	c, done := d.client()
	defer done()
	for {
		res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{
			Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: -1, ReplicationFactor: -1}}})
		if err == nil {
			err = res.Errors[topic]
		}
		if err == nil || errors.Is(err, kafka.TopicAlreadyExists) {
			break
		}
		// kafka-go answers BrokerNotAvailable itself while its pool has no
		// connection to the controller yet (seen on a loaded machine).
		var kerr kafka.Error
		if !errors.As(err, &kerr) || !(kerr.Temporary() || kerr == kafka.BrokerNotAvailable) ||
			!sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) {
			return fmt.Errorf("bench: create topic %s: %w", topic, err)
		}
	}
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) > 0 {
			return nil
		}
		if !sleepUntil(ctx, time.Now().Add(20*time.Millisecond)) {
			return fmt.Errorf("bench: wait for topic %s: %w", topic, ctx.Err())
		}
	}
}

// topicEnd sums the end offsets of topic's partitions.
func topicEnd(ctx context.Context, c *kafka.Client, topic string) (int64, error) {
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	var reqs []kafka.OffsetRequest
	for _, t := range md.Topics {
		for _, p := range t.Partitions {
			reqs = append(reqs, kafka.LastOffsetOf(p.ID))
		}
	}
	if len(reqs) == 0 {
		return 0, nil
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		sum += p.LastOffset
	}
	return sum, nil
}

// lastOfShards returns the highest seq of each shard of txmsg_outbox, as
// shard and seq pairs.
func lastOfShards(ctx context.Context, db *sql.DB) ([]any, error) {
	rows, err := db.QueryContext(ctx, "SELECT shard, MAX(seq) FROM txmsg_outbox GROUP BY shard")
	if err != nil {
		return nil, fmt.Errorf("bench: read the outbox's shards: %w", err)
	}
	defer rows.Close()
	var out []any
	for rows.Next() {
		var shard, seq int64
		if err := rows.Scan(&shard, &seq); err != nil {
			return nil, err
		}
		out = append(out, shard, seq)
	}
	return out, rows.Err()
}

// waitMarked waits until none of the (shard, seq) pairs of lasts is in
// txmsg_outbox.
func (d *drainRun) waitMarked(ctx context.Context, lasts []any) error {
	if len(lasts) == 0 {
		return nil
	}
	q := "SELECT COUNT(*) FROM txmsg_outbox WHERE " +
		strings.TrimSuffix(strings.Repeat("(shard = ? AND seq = ?) OR ", len(lasts)/2), " OR ")
	for {
		var n int
		if err := d.env.DB.QueryRowContext(ctx, q, lasts...).Scan(&n); err == nil && n == 0 {
			return nil
		}
		if !sleepUntil(ctx, time.Now().Add(10*time.Millisecond)) {
			return ctx.Err()
		}
	}
}

// naive drains naiveTable with one loop: BEGIN; SELECT … ORDER BY seq
// LIMIT b FOR UPDATE SKIP LOCKED; produce (acks=all); DELETE; COMMIT.
func (d *drainRun) naive(ctx context.Context, n int) (DrainRun, error) {
	// A transport of its own: kafka-go's default one may hold metadata from
	// before the topic was created, for up to 6 s.
	t := kafkax.NewTransport(d.env.Security)
	if t == nil {
		t = &kafka.Transport{}
	}
	defer t.CloseIdleConnections()
	w, err := kafkax.NewWriter(d.env.Brokers, kafkax.WriterConfig{BatchSize: d.cfg.NaiveBatch, Transport: t})
	if err != nil {
		return DrainRun{}, fmt.Errorf("bench: %w", err)
	}
	defer w.Close()
	sel := `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts FROM ` + naiveTable +
		` ORDER BY seq LIMIT ` + strconv.Itoa(d.cfg.NaiveBatch) + ` FOR UPDATE SKIP LOCKED`
	return d.measure(ctx, "naive loop", n, func() []int { return nil }, func(ctx context.Context) error {
		for {
			tx, err := d.env.DB.BeginTx(ctx, nil)
			if err != nil {
				return fmt.Errorf("bench: naive: begin: %w", err)
			}
			more, err := naiveRound(ctx, tx, w, sel)
			if err != nil {
				return errors.Join(err, tx.Rollback())
			}
			if !more {
				return tx.Rollback()
			}
			if err := tx.Commit(); err != nil {
				return fmt.Errorf("bench: naive: commit: %w", err)
			}
		}
	})
}

// naiveRound moves one batch in tx; it reports false when none was left.
func naiveRound(ctx context.Context, tx *sql.Tx, w *kafka.Writer, sel string) (bool, error) {
	rows, err := tx.QueryContext(ctx, sel)
	if err != nil {
		return false, fmt.Errorf("bench: naive: select: %w", err)
	}
	batch, err := relay.ScanRows(rows, 0)
	if err != nil || len(batch) == 0 {
		return false, err
	}
	msgs := make([]kafka.Message, len(batch))
	args := make([]any, len(batch))
	for i, r := range batch {
		msgs[i] = kafka.Message{Topic: r.Topic, Key: r.Key, Value: r.Value,
			Headers: []kafka.Header{{Key: txmsg.HeaderID, Value: []byte(r.ID)}}}
		args[i] = r.Seq
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		return false, fmt.Errorf("bench: naive: produce: %w", err)
	}
	in := strings.TrimSuffix(strings.Repeat("?,", len(batch)), ",")
	if _, err := tx.ExecContext(ctx, `DELETE FROM `+naiveTable+` WHERE seq IN (`+in+`)`, args...); err != nil {
		return false, fmt.Errorf("bench: naive: delete: %w", err)
	}
	return true, nil
}
