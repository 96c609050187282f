package relay

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// The probe remembers the seqs skipped below the highest seen, and forgets
// each once it arrives, is settled, times out, or is pushed out.
func TestTailTracksGaps(t *testing.T) {
	tl := &tail{timeout: time.Second, started: true, after: 10}
	tl.observe([]Arrival{{Seq: 11}, {Seq: 14}, {Seq: 20}}, 0, 0)
	if got, want := tl.ranges(), []SeqRange{{12, 13}, {15, 19}}; !slices.Equal(got, want) || tl.after != 20 {
		t.Fatalf("gaps %v after %d; want %v after 20", got, tl.after, want)
	}
	// Late commits fill gaps, splitting them.
	tl.observe([]Arrival{{Seq: 12}, {Seq: 17}}, 100*time.Millisecond, 0)
	if got, want := tl.ranges(), []SeqRange{{13, 13}, {15, 16}, {18, 19}}; !slices.Equal(got, want) {
		t.Fatalf("gaps %v; want %v", got, want)
	}
	// Seqs below the settled horizon are final.
	tl.observe(nil, 200*time.Millisecond, 16)
	if got, want := tl.ranges(), []SeqRange{{16, 16}, {18, 19}}; !slices.Equal(got, want) {
		t.Fatalf("gaps after settling below 16: %v; want %v", got, want)
	}
	// A newer gap outlives the old ones' timeout.
	tl.observe([]Arrival{{Seq: 30}}, 900*time.Millisecond, 0)
	tl.observe(nil, 1100*time.Millisecond, 0)
	if got, want := tl.ranges(), []SeqRange{{21, 29}}; !slices.Equal(got, want) {
		t.Fatalf("gaps after the timeout: %v; want %v", got, want)
	}
	// Seqs it stopped asking about before they were final may still commit.
	if tl.lost != 19 {
		t.Fatalf("lost %d after the timeout; want 19", tl.lost)
	}
	// At most maxGaps are kept: the oldest go.
	for i := range maxGaps + 5 {
		tl.observe([]Arrival{{Seq: int64(32 + 2*i)}}, 1200*time.Millisecond, 0)
	}
	if got := tl.ranges(); len(got) != maxGaps || got[len(got)-1] != (SeqRange{int64(31 + 2*(maxGaps+4)), int64(31 + 2*(maxGaps+4))}) {
		t.Fatalf("%d gaps, last %v; want the newest %d", len(got), got[len(got)-1], maxGaps)
	}
	if want := int64(31 + 2*4); tl.lost != want {
		t.Fatalf("lost %d after pushing out gaps; want %d", tl.lost, want)
	}
}

// The probe's rows are handed over from the first probe that read a settled
// seq above every seq it lost, until it loses one that is not final.
func TestTailChainsProbesThatSawEverySeqStillToCommit(t *testing.T) {
	tl := &tail{lost: 20}
	if tl.link(time.Second, 20) {
		t.Fatal("handing over while seq 20 may still commit unseen")
	}
	if !tl.link(2*time.Second, 21) || tl.chain != 2*time.Second {
		t.Fatalf("chain from %v; want from the first probe after seq 20 was final, 2s", tl.chain)
	}
	if !tl.link(3*time.Second, 25) || tl.chain != 2*time.Second {
		t.Fatalf("chain from %v; want it to go on from 2s", tl.chain)
	}
	tl.lost = 30
	if tl.link(4*time.Second, 25) {
		t.Fatal("handing over while seq 30 may still commit unseen")
	}
	if !tl.link(5*time.Second, 31) || tl.chain != 5*time.Second {
		t.Fatalf("chain from %v; want it to start again at 5s", tl.chain)
	}
	// Nothing is lost below an empty table's first look.
	if !(&tail{}).link(time.Second, 0) {
		t.Fatal("no handing over though no seq was lost")
	}
}

// A row whose transaction commits after a later row was delivered is
// delivered at once, though its shard polls only every minute: the change
// probe asks again about the seqs it skipped.
func TestRelayChangeProbeFindsLateCommits(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	ctx := context.Background()
	cfg := testConfig(k.Addrs)
	cfg.PollMax = time.Minute
	startEngine(t, d.DB, cfg)
	probeRunning(t, d.DB, k.Addrs, "probe")
	txA, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = txA.Rollback() })
	a := msg("probe", "a", 1)
	a.ID = "A"
	if err := outbox.Publish(ctx, txA, a); err != nil {
		t.Fatal(err)
	}
	b := msg("probe", "b", 1)
	b.ID = "B"
	if err := publishTx(ctx, d.DB, true, b); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, k.Addrs, "probe", 3, 10*time.Second)
	if err := txA.Commit(); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, k.Addrs, "probe", 4, 10*time.Second)
}

// Marking delivered rows never waits for a producer's open transaction,
// however few rows the table holds: the DELETE must not scan the table,
// which at READ COMMITTED would wait on the uncommitted row's lock.
func TestRelayMarkingDoesNotWaitForOpenTransactions(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	ctx := context.Background()
	open, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = open.Rollback() })
	if err := outbox.Publish(ctx, open, msg("open", "k", 1)); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := publishTx(ctx, d.DB, true, msg("marked", "k", i)); err != nil {
			t.Fatal(err)
		}
	}
	startEngine(t, d.DB, testConfig(k.Addrs))
	testenv.Eventually(t, 10*time.Second, func() error {
		var n int
		if err := d.DB.QueryRow("SELECT COUNT(*) FROM txmsg_outbox").Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d delivered rows not marked yet", n)
		}
		return nil
	})
}

// A batch cut short by relay.batch_bytes is followed by the next round at
// once: the change probe does not wake a shard for rows it already listed.
func TestRelayBatchFullByBytesPollsAgainAtOnce(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	ctx := context.Background()
	cfg := testConfig(k.Addrs)
	cfg.PollMax = time.Minute
	cfg.BatchBytes = 1000
	for i := range 40 {
		m := msg("bytes", "k", i)
		m.Value = append(m.Value, make([]byte, 400)...)
		if err := publishTx(ctx, d.DB, true, m); err != nil {
			t.Fatal(err)
		}
	}
	startEngine(t, d.DB, cfg)
	waitDelivered(t, k.Addrs, "bytes", 40, 10*time.Second)
}

// A shard draining a backlog waits when it runs more than a window of seqs
// ahead of the slowest draining shard, and only then.
func TestRelayShardsDrainWithinAWindow(t *testing.T) {
	e, err := New(&sql.DB{}, Config{Brokers: []string{"127.0.0.1:9092"}, Shards: 4, BatchSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	src := e.sources[0]
	ws := make([]*shardWorker, 4)
	for i := range ws {
		ws[i] = &shardWorker{src: src, shard: i}
	}
	window := int64(2 * 10 * 4)
	if e.ahead(ws[0]) {
		t.Fatal("a shard not draining waits")
	}
	e.setFront(ws[0], 100)
	e.setFront(ws[1], 100+window)
	e.setFront(ws[2], 100+window+1)
	switch {
	case e.ahead(ws[0]):
		t.Fatal("the slowest shard waits")
	case e.ahead(ws[1]):
		t.Fatal("a shard a window ahead waits")
	case !e.ahead(ws[2]):
		t.Fatal("a shard more than a window ahead does not wait")
	case e.ahead(ws[3]):
		t.Fatal("a shard not draining waits")
	}
	// The slowest stops draining (caught up, failing, held): it holds no
	// one back.
	e.setFront(ws[0], noFront)
	if e.ahead(ws[2]) {
		t.Fatal("a shard waits for one that stopped draining")
	}
}

// More rows than one probe lists do not hide a row of another shard that
// commits right after them.
func TestRelayChangeProbeListsBurstsPageByPage(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	ctx := context.Background()
	cfg := testConfig(k.Addrs)
	cfg.PollMax = time.Minute
	startEngine(t, d.DB, cfg)
	probeRunning(t, d.DB, k.Addrs, "burst-c")
	burst := make([]txmsg.Message, arrivalsLimit+200)
	for i := range burst {
		burst[i] = msg("burst", "a", i)
	}
	if err := publishTx(ctx, d.DB, true, burst...); err != nil {
		t.Fatal(err)
	}
	if err := publishTx(ctx, d.DB, true, msg("burst-b", "b", 1)); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, k.Addrs, "burst-b", 1, 10*time.Second)
}

// probeRunning publishes two rows of one key to topic and waits for both:
// the second can only be delivered on a wake (the first may be the worker's
// first poll), so the change probe is running.
func probeRunning(t *testing.T, db *sql.DB, addrs []string, topic string) {
	t.Helper()
	for i := range 2 {
		if err := publishTx(context.Background(), db, true, msg(topic, "c", i)); err != nil {
			t.Fatal(err)
		}
		waitDelivered(t, addrs, topic, i+1, 10*time.Second)
	}
}

// countingSource is an OutboxSource that counts its change probes.
type countingSource struct {
	*OutboxSource
	probes atomic.Int64
}

func (s *countingSource) Arrivals(ctx context.Context, q Querier, after int64, gaps []SeqRange, limit int) ([]Arrival, error) {
	s.probes.Add(1)
	return s.OutboxSource.Arrivals(ctx, q, after, gaps, limit)
}

// An idle relay's change probe looks less often once no row arrived for a
// second (at most one look per idleProbe instead of one per PollMin), and
// the first row after the quiet spell is still noticed and delivered.
func TestRelayChangeProbeSlowsDownWhenIdle(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	cfg := testConfig(k.Addrs)
	cfg.PollMin = 2 * time.Millisecond
	cfg.PollMax = 30 * time.Second // only the probe wakes a shard in time
	src := &countingSource{OutboxSource: NewOutboxSource(false)}
	startEngine(t, d.DB, cfg, WithSources(src))
	time.Sleep(idleAfter + 500*time.Millisecond)
	before := src.probes.Load()
	time.Sleep(time.Second)
	// Busy, the probe would look 500 times a second.
	if n := src.probes.Load() - before; n > int64(time.Second/idleProbe)+5 {
		t.Fatalf("the probe of an idle relay looked %d times in a second, want at most about %d", n, time.Second/idleProbe)
	}
	if err := publishTx(context.Background(), d.DB, true, msg("idle", "k", 1)); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, k.Addrs, "idle", 1, 10*time.Second)
}

// The change probe asks about small gaps seq by seq, and about larger ones,
// and those past its budget, as ranges.
func TestArrivalsQueryAsksAboutSmallGapsSeqBySeq(t *testing.T) {
	gaps := []SeqRange{{3, 3}, {5, 6}, {10, 10 + gapPoints - 1}, {1000, 1000 + gapPoints}}
	query, args := arrivalsQuery(2000, gaps, 7)
	want := outboxArrivals + " OR seq BETWEEN ? AND ? OR seq IN (?" + strings.Repeat(", ?", 2+gapPoints) + ")" + outboxArrivalsOrder
	if query != want {
		t.Fatalf("query\n%s\nwant\n%s", query, want)
	}
	if len(args) != 1+2+3+gapPoints+1 || args[0] != int64(2000) || args[1] != int64(1000) || args[2] != int64(1000+gapPoints) ||
		args[3] != int64(3) || args[5] != int64(6) || args[len(args)-2] != int64(10+gapPoints-1) || args[len(args)-1] != 7 {
		t.Fatalf("args %v", args)
	}
	var many []SeqRange
	for i := range probePoints/gapPoints + 1 {
		many = append(many, SeqRange{int64(i * 1000), int64(i*1000 + gapPoints - 1)})
	}
	query, _ = arrivalsQuery(0, many, 1)
	if got := strings.Count(query, "BETWEEN"); got != 1 {
		t.Fatalf("%d ranges past a budget of %d seqs; want 1: %s", got, probePoints, query)
	}
}

// Gaps far below the newest rows, with every row between them and the
// newest delivered and not purged yet (a read view holds purge back, as a
// busy server's does for a while), cost a lookup each: asked as ranges,
// InnoDB read each past its end through every delete-marked entry up to
// the live rows (2,551 pages here, against 258 seq by seq).
func TestRelayChangeProbeStepsOverDeliveredRowsOnce(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	const rows, live = 40000, 10
	publishMany(t, d.DB, rows)
	testenv.HoldReadView(t, d.DB)
	var low, high int64
	if err := d.DB.QueryRow("SELECT MIN(seq), MAX(seq) FROM txmsg_outbox").Scan(&low, &high); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DB.Exec("DELETE FROM txmsg_outbox WHERE seq <= ?", high-live); err != nil {
		t.Fatal(err)
	}
	var gaps []SeqRange
	for i := range int64(maxGaps) {
		gaps = append(gaps, SeqRange{low + 10*i, low + 10*i + 1})
	}
	query, args := arrivalsQuery(high-live/2, gaps, arrivalsLimit)
	if got := countRows(t, d.DB, "SELECT COUNT(*) FROM ("+query+") a", args...); got != live/2 {
		t.Fatalf("the probe found %d rows; want the %d newest", got, live/2)
	}
	if pages := testenv.PagesAccessed(t, d.DB, query, args...); pages > 1000 {
		t.Fatalf("the probe accessed %d pages for %d gaps of 2 seqs; want at most 1000", pages, len(gaps))
	}
}

// publishMany publishes n messages of topic t to the outbox of db, 1,000 a
// statement, and returns the publisher.
func publishMany(t *testing.T, db *sql.DB, n int) *outbox.Publisher {
	t.Helper()
	pub, err := outbox.NewPublisher(outbox.WithShards(16))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 1000 {
		msgs := make([]txmsg.Message, min(1000, n-i))
		for j := range msgs {
			msgs[j] = txmsg.Message{Topic: "t", Key: []byte(fmt.Sprint(i + j)), Value: []byte("v")}
		}
		if err := pub.Publish(context.Background(), db, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	return pub
}

// The horizon's reading of the newest seq steps over the rows inserted
// since the last reading, not over every delivered row purge has not
// removed yet: backwards from the end of the index, as MAX(seq) reads, it
// stepped over all of them (24 ms for 200,000, measured by hand), where
// ANALYZE cannot count them.
func TestRelayHeadStepsOverOnlyNewRows(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	const rows = 40000
	pub := publishMany(t, d.DB, rows)
	var high int64
	if err := d.DB.QueryRow("SELECT MAX(seq) FROM txmsg_outbox").Scan(&high); err != nil {
		t.Fatal(err)
	}
	testenv.HoldReadView(t, d.DB)
	if _, err := d.DB.Exec("DELETE FROM txmsg_outbox"); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, d.DB, msg("t", "new", 1)); err != nil {
		t.Fatal(err)
	}
	var newest int64
	if err := d.DB.QueryRow("SELECT MAX(seq) FROM txmsg_outbox").Scan(&newest); err != nil {
		t.Fatal(err)
	}
	head, _, _, err := NewOutboxSource(false).Head(ctx, d.DB, high)
	if err != nil || head != newest || head <= high {
		t.Fatalf("head %d, %v; want %d, above %d", head, err, newest, high)
	}
	// 0 pages: the optimizer answered from the end of the index, uncounted.
	if pages := testenv.PagesAccessed(t, d.DB, headQuery(high), high); pages == 0 || pages > 10 {
		t.Fatalf("the head reading accessed %d pages beside %d delivered rows; want 1 to 10", pages, rows)
	}
}
