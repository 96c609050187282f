package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// readCountingOutbox is an OutboxSource that counts its shards' reads that
// returned rows, and the rows its change probe read.
type readCountingOutbox struct {
	*OutboxSource
	reads, probed atomic.Int64
}

func (s *readCountingOutbox) Pending(ctx context.Context, q Querier, shard int, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.Pending(ctx, q, shard, limit)
	if len(rows) > 0 {
		s.reads.Add(1)
	}
	return rows, err
}

func (s *readCountingOutbox) PendingFrom(ctx context.Context, q Querier, shard int, from int64, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.PendingFrom(ctx, q, shard, from, limit)
	if len(rows) > 0 {
		s.reads.Add(1)
	}
	return rows, err
}

func (s *readCountingOutbox) ArrivalRows(ctx context.Context, q Querier, after int64, gaps []SeqRange, shards []int, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.ArrivalRows(ctx, q, after, gaps, shards, limit)
	s.probed.Add(int64(len(rows)))
	return rows, err
}

// handingRelay is an engine over a readCountingOutbox whose change probe
// hands its rows over, and the database and Kafka it works with.
type handingRelay struct {
	*running
	d   *testenv.Database
	k   *testenv.Kafka
	src *readCountingOutbox
}

// startHanding starts a handingRelay on Kafka of partitions, and returns
// once a row was delivered without its shard reading it. The rows go in
// after the probe's first look at an empty table: none is below it, and
// the handing does not wait for the horizon, which any write transaction
// left open on the server (another test's) holds back.
func startHanding(t *testing.T, partitions int, cfg func(*Config)) *handingRelay {
	t.Helper()
	d := testenv.NewDB(t)
	return startHandingOn(t, d, d.DB, partitions, cfg)
}

// startHandingOn is startHanding with the engine on pool, a pool of d.
func startHandingOn(t *testing.T, d *testenv.Database, pool *sql.DB, partitions int, cfg func(*Config)) *handingRelay {
	t.Helper()
	k := testenv.NewKafka(t, partitions)
	c := testConfig(k.Addrs)
	c.PollMax = 30 * time.Second // only the probe wakes a shard
	// Leases (and so the marks' deadlines) outlast the test even on a machine
	// so loaded that the tests' 2 s lease runs out: a shard claimed again
	// reads itself and its unmarked rows go out again, by design.
	c.LeaseTTL = 2 * time.Minute
	if cfg != nil {
		cfg(&c)
	}
	src := &readCountingOutbox{OutboxSource: NewOutboxSource(false)}
	r := startEngine(t, pool, c, WithSources(src))
	testenv.Eventually(t, 10*time.Second, func() error {
		if r.probesDone.Load() == 0 {
			return errors.New("the change probe has not looked yet")
		}
		return nil
	})
	n := 0
	testenv.Eventually(t, 20*time.Second, func() error {
		reads := src.reads.Load()
		if err := publishTx(context.Background(), d.DB, true, msg("handing", "k", n)); err != nil {
			return err
		}
		n++
		waitDelivered(t, k.Addrs, "handing", n, 10*time.Second)
		if src.reads.Load() != reads {
			return errors.New("the shard read the row itself")
		}
		return nil
	})
	return &handingRelay{running: r, d: d, k: k, src: src}
}

// trickle commits perKey messages of each of keys to topic from one
// goroutine per key, a transaction at a time and pause apart; waits until
// all were delivered, in order per key; and returns how many it committed
// and how many duplicates Kafka holds.
func (h *handingRelay) trickle(t *testing.T, ctx context.Context, topic string, keys, perKey int, pause time.Duration) (n, dups int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	for k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%d", k)
			for n := range perKey {
				if err := publishTx(ctx, h.d.DB, true, msg(topic, key, n)); err != nil {
					errs <- err
					return
				}
				select {
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				case <-time.After(pause):
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n = keys * perKey
	checkOrder(t, waitDelivered(t, h.k.Addrs, topic, n, 30*time.Second), nil)
	_, dups, err := delivered(ctx, h.k.Addrs, topic)
	if err != nil {
		t.Fatal(err)
	}
	return n, dups
}

// Under a steady trickle from concurrent producers, the change probe's rows
// are published as the probe read them: the shards read themselves only
// now and then (the first read, a row listed by a probe that overlapped a
// read), each row goes out once, and every key in order.
func TestRelayPublishesTheProbesRowsWithoutReadingThemAgain(t *testing.T) {
	t.Parallel()
	h := startHanding(t, 4, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reads := h.src.reads.Load()
	n, dups := h.trickle(t, ctx, "trickle", 16, 25, 5*time.Millisecond)
	if dups > 0 {
		t.Errorf("%d duplicates without a fault", dups)
	}
	reads = h.src.reads.Load() - reads
	t.Logf("%d messages: %d shard reads with rows", n, reads)
	if reads > int64(n)/10 {
		t.Errorf("%d shard reads found rows for %d messages, want at most %d: the probe's rows were read again", reads, n, n/10)
	}
}

// A transaction that holds its seq past the probe's gap timeout drops out of
// the probe's sight. When it then commits, just before a later transaction
// of its key, its row goes first: the probe no longer hands rows over until
// that seq is final, and the shard reads itself. Handed the later row alone,
// the worker would have published it first, and the late row only at its
// next read.
func TestRelayLateCommitBeyondTheGapTimeoutKeepsItsKeysOrder(t *testing.T) {
	t.Parallel()
	// The gap timeout is PollMax when that is longer.
	h := startHanding(t, 1, func(c *Config) { c.PollMax = time.Second })
	d, k := h.d, h.k
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	late, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = late.Rollback() }()
	if err := outbox.Publish(ctx, late, msg("late", "a", 0)); err != nil {
		t.Fatal(err)
	}
	// A later seq arrives, leaving a gap at the open transaction's.
	if err := publishTx(ctx, d.DB, true, msg("late", "b", 0)); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, k.Addrs, "late", 1, 10*time.Second)
	time.Sleep(gapTimeout + time.Second)
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := publishTx(ctx, d.DB, true, msg("late", "a", 1)); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, waitDelivered(t, k.Addrs, "late", 3, 10*time.Second), nil)
}

// Reads and probes run side by side: with the shards reading themselves
// every few milliseconds, rows are often both read by their shard and
// listed by a probe, before or after the read. Each still goes out once.
func TestRelayReadsAndHandoffsThatCrossPublishEachRowOnce(t *testing.T) {
	t.Parallel()
	// A shard whose last read is 3 ms old reads again.
	h := startHanding(t, 4, func(c *Config) { c.PollMax = 3 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reads, probed := h.src.reads.Load(), h.src.probed.Load()
	n, dups := h.trickle(t, ctx, "crossed", 16, 40, 2*time.Millisecond)
	reads, probed = h.src.reads.Load()-reads, h.src.probed.Load()-probed
	t.Logf("%d messages: %d shard reads with rows, %d rows probed, %d duplicates", n, reads, probed, dups)
	if reads == 0 || probed == 0 {
		t.Fatalf("%d reads and %d rows probed: want both", reads, probed)
	}
	if dups > 0 {
		t.Errorf("%d duplicates without a fault", dups)
	}
}

// A worker remembers the seqs its reads returned until the probe sent
// after the read is done (it, or one before, listed them), and when it
// must forget them early, it stops taking handoffs until then.
func TestPolledForgetsSeqsNoProbeCanListAnyMore(t *testing.T) {
	var p polled
	p.read([]Row{{Seq: 1}, {Seq: 2}}, 5)
	p.forget(5)
	if len(p.seqs) != 2 {
		t.Fatalf("forgot %v once probe 5 was done; probe 6 may still list them", p.seqs)
	}
	p.forget(6)
	if len(p.seqs) != 0 {
		t.Fatalf("remembers %v after probe 6", p.seqs)
	}
	rows := make([]Row, maxPolled)
	for i := range rows {
		rows[i].Seq = int64(i + 10)
	}
	p.read(rows, 7)
	p.read([]Row{{Seq: 1}}, 8)
	if len(p.seqs) != 1 || p.blind != 7 {
		t.Fatalf("%d seqs, blind %d; want the last read's 1, blind to probe 7", len(p.seqs), p.blind)
	}
	w := &shardWorker{src: NewOutboxSource(false), synced: true, polled: p}
	e := &Engine{cfg: Config{PollMax: time.Minute}, epoch: time.Now()}
	if _, ok := e.handed(w, []handoff{{rows: []Row{{Seq: 5000}}, probe: 8}}, false); ok {
		t.Fatal("took a handoff of probe 8, which may list a forgotten seq")
	}
	if rows, ok := e.handed(w, []handoff{{rows: []Row{{Seq: 5000}, {Seq: 1}}, probe: 9}}, false); !ok || len(rows) != 1 || rows[0].Seq != 5000 {
		t.Fatalf("handed %v, %v; want the row not read, 5000", rows, ok)
	}
}

// On a pool whose sessions default to READ UNCOMMITTED the probe, whose rows
// are published, still reads committed rows only.
func TestRelayHandsOverNoUncommittedRowUnderReadUncommitted(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	h := startHandingOn(t, d, d.ReadUncommittedPool(t), 1, nil)
	ctx := context.Background()
	tx, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := outbox.Publish(ctx, tx, txmsg.Message{ID: "phantom", Topic: "dirty", Key: []byte("a"), Value: []byte("a:1")}); err != nil {
		t.Fatal(err)
	}
	// Committed after the phantom's row, whose seq is below: a probe that
	// saw it would hand it over with this one, or before.
	publish := func(n int, what string) {
		t.Helper()
		if err := publishTx(ctx, d.DB, true, msg("dirty", "b", n)); err != nil {
			t.Fatal(err)
		}
		for _, m := range waitDelivered(t, h.k.Addrs, "dirty", n, 10*time.Second) {
			if testenv.HeaderValue(m, txmsg.HeaderID) == "phantom" {
				t.Fatalf("the relay published a row of %s", what)
			}
		}
	}
	publish(1, "an uncommitted transaction")
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	publish(2, "a transaction that rolled back")
}

// wholeCountingOutbox is an OutboxSource that records the shards of the
// rows its change probe read whole.
type wholeCountingOutbox struct {
	*OutboxSource
	mu    sync.Mutex
	whole map[int]int
}

func (s *wholeCountingOutbox) ArrivalRows(ctx context.Context, q Querier, after int64, gaps []SeqRange, shards []int, limit Limit) ([]Row, error) {
	rows, err := s.OutboxSource.ArrivalRows(ctx, q, after, gaps, shards, limit)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rows {
		if len(r.Value) > 0 {
			s.whole[r.Shard]++
		}
	}
	return rows, err
}

// Relays that share the shards each read whole, in their change probes,
// only the rows of their own shards, and deliver every row in order.
func TestRelaysSharingShardsProbeOnlyTheirOwnRowsWhole(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 6)
	owners := []string{"one", "two"}
	srcs := map[string]*wholeCountingOutbox{}
	engines := map[string]*running{}
	for _, owner := range owners {
		cfg := testConfig(k.Addrs)
		// The shards must stay where they settled, however loaded the
		// machine: the check below compares with the leases at the end.
		cfg.Owner, cfg.LeaseTTL = owner, 2*time.Minute
		srcs[owner] = &wholeCountingOutbox{OutboxSource: NewOutboxSource(false), whole: map[int]int{}}
		engines[owner] = startEngine(t, d.DB, cfg, WithSources(srcs[owner]))
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, owner := range owners {
			q := "SELECT COUNT(*) FROM txmsg_relay_leases WHERE owner = '" + owner + "' AND expires_at > UTC_TIMESTAMP(6)"
			if n := countRows(t, d.DB, q); n != 8 {
				return fmt.Errorf("%s holds %d shards; want 8", owner, n)
			}
		}
		return nil
	})
	// Probes sent while a relay still owned other shards end before the rows
	// go in.
	for _, owner := range owners {
		e := engines[owner]
		sent := e.probesSent.Load()
		testenv.Eventually(t, 10*time.Second, func() error {
			if done := e.probesDone.Load(); done <= sent {
				return fmt.Errorf("%s: probe %d done, want %d", owner, done, sent+1)
			}
			return nil
		})
		srcs[owner].mu.Lock()
		clear(srcs[owner].whole)
		srcs[owner].mu.Unlock()
	}
	seq := map[string]int{}
	produceN(t, d.DB, "sharing", 40, 400, seq)
	checkOrder(t, waitDelivered(t, k.Addrs, "sharing", 400, 20*time.Second), nil)

	read := 0
	for _, owner := range owners {
		own := map[int]bool{}
		rows, err := d.DB.Query("SELECT shard FROM txmsg_relay_leases WHERE owner = ?", owner)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var shard int
			if err := rows.Scan(&shard); err != nil {
				t.Fatal(err)
			}
			own[shard] = true
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		src := srcs[owner]
		src.mu.Lock()
		for shard, n := range src.whole {
			read += n
			if !own[shard] {
				t.Errorf("%s's probe read %d rows of shard %d whole; it owns only %v", owner, n, shard, slices.Sorted(maps.Keys(own)))
			}
		}
		src.mu.Unlock()
	}
	if read == 0 {
		t.Error("no probe read a row whole")
	}
}

// A probe reads whole the rows of the shards the engine owns when it looks
// (all of them: nil), and hands over only those: a shard claimed since
// reads its rows itself.
func TestHandOverOnlyTheShardsReadWhole(t *testing.T) {
	db, err := sql.Open("mysql", "txmsg@tcp(127.0.0.1:1)/none") // never connected
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e, err := New(db, testConfig([]string{"127.0.0.1:1"}))
	if err != nil {
		t.Fatal(err)
	}
	src := e.sources[0]
	ins := e.inboxes[src.Name()]
	if own := e.ownShards(src.Name()); own == nil || len(own) != 0 {
		t.Fatalf("ownShards with no shard claimed = %v; want none (not nil, which means all)", own)
	}
	ins[0].reset(true)
	whole := e.ownShards(src.Name())
	if !slices.Equal(whole, []int{0}) {
		t.Fatalf("ownShards with shard 0 claimed = %v; want [0]", whole)
	}
	ins[1].reset(true) // claimed after the probe looked
	rows := []Row{{Seq: 1, Shard: 0, Value: []byte("a")}, {Seq: 2, Shard: 1}, {Seq: 3, Shard: 2}}
	as := []Arrival{{Seq: 1, Shard: 0}, {Seq: 2, Shard: 1}, {Seq: 3, Shard: 2}}
	newCoordinator(e, context.Background(), &sync.WaitGroup{}).handOver(src, as, rows, whole, 1, true, 0)
	if hs, overflow := ins[0].take(); len(hs) != 1 || len(hs[0].rows) != 1 || hs[0].rows[0].Seq != 1 || overflow {
		t.Fatalf("shard 0 (read whole) was handed %+v, overflow %v; want its row", hs, overflow)
	}
	if hs, overflow := ins[1].take(); len(hs) != 0 || !overflow {
		t.Fatalf("shard 1 (claimed after the look) was handed %+v, overflow %v; want nothing and a read", hs, overflow)
	}
	for i := range ins {
		ins[i].reset(true)
	}
	if own := e.ownShards(src.Name()); own != nil {
		t.Fatalf("ownShards with every shard claimed = %v; want nil", own)
	}
}
