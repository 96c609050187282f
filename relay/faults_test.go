package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// produceN publishes n messages over keys in single-message transactions.
func produceN(t *testing.T, db *sql.DB, topic string, keys, n int, seq map[string]int) {
	t.Helper()
	if err := publishN(db, topic, keys, n, seq); err != nil {
		t.Fatal(err)
	}
}

// publishN is produceN for a goroutine other than the test's.
func publishN(db *sql.DB, topic string, keys, n int, seq map[string]int) error {
	ctx := context.Background()
	for i := range n {
		key := fmt.Sprintf("k%d", i%keys)
		seq[key]++
		if err := publishTx(ctx, db, true, msg(topic, key, seq[key])); err != nil {
			return err
		}
	}
	return nil
}

// Two relays share the shards; one dies without releasing its leases; the
// other takes them over after the lease TTL and delivers everything in order.
func TestRelayFailoverTakesOverDeadRelaysShards(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 6)
	victimDB, err := sql.Open("mysql", d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(k.Addrs)
	cfg.Owner = "victim"
	victim := startEngine(t, victimDB, cfg)
	cfg.Owner = "survivor"
	survivor := startEngine(t, d.DB, cfg)

	testenv.Eventually(t, 10*time.Second, func() error {
		v := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_relay_leases WHERE owner = 'victim' AND expires_at > UTC_TIMESTAMP(6)")
		s := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_relay_leases WHERE owner = 'survivor' AND expires_at > UTC_TIMESTAMP(6)")
		if v != 8 || s != 8 {
			return fmt.Errorf("victim holds %d shards, survivor %d; want 8 each", v, s)
		}
		return nil
	})
	seq := map[string]int{}
	produceN(t, d.DB, "failover", 20, 200, seq)

	// The crash: the victim's database handle dies under it, so it can
	// neither mark nor release anything.
	victimDB.Close()
	victim.cancel()
	// Rows keep coming while nobody owns the victim's shards; writing them
	// is not part of the takeover's time.
	produced := make(chan error, 1)
	go func() { produced <- publishN(d.DB, "failover", 20, 200, seq) }()

	testenv.Eventually(t, 3*cfg.LeaseTTL, func() error {
		if s := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_relay_leases WHERE owner = 'survivor'"); s != 16 {
			return fmt.Errorf("survivor holds %d of 16 shards", s)
		}
		return nil
	})
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	msgs := waitDelivered(t, k.Addrs, "failover", 400, 20*time.Second)
	checkOrder(t, msgs, nil)
	if err := survivor.stop(t); err != nil {
		t.Fatal(err)
	}
}

// Kafka refuses every produce for a while: delivery waits, then completes
// with nothing lost and every key in order.
func TestRelayKafkaOutageDelaysButLosesNothing(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	var down atomic.Bool
	var refused atomic.Int64
	k.Cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		refused.Add(1)
		return nil, errors.New("broker down"), true
	})
	startEngine(t, d.DB, testConfig(k.Addrs))
	seq := map[string]int{}
	produceN(t, d.DB, "outage", 10, 50, seq)
	waitDelivered(t, k.Addrs, "outage", 50, 10*time.Second)

	down.Store(true)
	produceN(t, d.DB, "outage", 10, 100, seq)
	testenv.Eventually(t, 10*time.Second, func() error {
		if refused.Load() < 3 {
			return fmt.Errorf("%d produce requests refused so far", refused.Load())
		}
		return nil
	})
	if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox"); n == 0 {
		t.Fatal("outbox drained while Kafka was down")
	}
	down.Store(false)
	msgs := waitDelivered(t, k.Addrs, "outage", 150, 30*time.Second)
	checkOrder(t, msgs, nil)
}

// Every database connection of the relay is killed mid-stream: it
// reconnects and delivers everything.
func TestRelayRecoversFromDroppedDatabaseConnections(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	relayDB, err := sql.Open("mysql", d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relayDB.Close() })
	startEngine(t, relayDB, testConfig(k.Addrs))
	seq := map[string]int{}
	produceN(t, d.DB, "dbdrop", 10, 100, seq)
	waitDelivered(t, k.Addrs, "dbdrop", 50, 10*time.Second)

	admin, err := sql.Open("mysql", testenv.BaseDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var conn *sql.Conn
	if conn, err = d.DB.Conn(context.Background()); err != nil {
		t.Fatal(err)
	}
	var self int64
	if err := conn.QueryRowContext(context.Background(), "SELECT CONNECTION_ID()").Scan(&self); err != nil {
		t.Fatal(err)
	}
	rows, err := admin.Query("SELECT id FROM information_schema.processlist WHERE db = ? AND id <> ?", d.Name, self)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	conn.Close()
	for _, id := range ids {
		if _, err := admin.Exec(fmt.Sprintf("KILL %d", id)); err != nil && !strings.Contains(err.Error(), "Unknown thread") {
			t.Fatal(err)
		}
	}
	if len(ids) == 0 {
		t.Fatal("found no relay connections to kill")
	}
	produceN(t, d.DB, "dbdrop", 10, 100, seq)
	msgs := waitDelivered(t, k.Addrs, "dbdrop", 200, 30*time.Second)
	checkOrder(t, msgs, nil)
}

// An over-size message is dead-lettered after its attempts; the messages
// after it are delivered; a dead retry delivers it once it fits.
func TestRelayPoisonMessageGoesToDeadLettersAndRetryWorks(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	ctx := context.Background()
	cfg := testConfig(k.Addrs)
	cfg.Writer.BatchBytes = 64 << 10
	r := startEngine(t, d.DB, cfg)

	big := txmsg.Message{ID: "big", Topic: "poison", Key: []byte("k"), Value: make([]byte, 100<<10)}
	if err := publishTx(ctx, d.DB, true, msg("poison", "k", 1), big, msg("poison", "k", 3), msg("poison", "other", 1)); err != nil {
		t.Fatal(err)
	}
	msgs := waitDelivered(t, k.Addrs, "poison", 3, 10*time.Second)
	for _, m := range msgs {
		if testenv.HeaderValue(m, txmsg.HeaderID) == "big" {
			t.Fatal("the over-size message was delivered")
		}
	}
	dead, err := ListDead(ctx, d.DB, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	if dead[0].ID != "big" || dead[0].Attempts != 3 || dead[0].Source != txmsg.SourceOutbox || len(dead[0].Value) != 100<<10 {
		t.Fatalf("dead letter %s from %s after %d attempts with %d bytes, want big from outbox after 3 attempts with all its bytes",
			dead[0].ID, dead[0].Source, dead[0].Attempts, len(dead[0].Value))
	}
	if !strings.Contains(dead[0].LastError, "Message Size Too Large") {
		t.Errorf("dead letter error %q does not say the message is too large", dead[0].LastError)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	if err := RetryDead(ctx, d.DB, "nope"); !errors.Is(err, txmsg.ErrNotFound) {
		t.Fatalf("RetryDead(unknown) = %v, want ErrNotFound", err)
	}
	if err := RetryDead(ctx, d.DB, "big"); err != nil {
		t.Fatal(err)
	}
	startEngine(t, d.DB, testConfig(k.Addrs))
	msgs = waitDelivered(t, k.Addrs, "poison", 4, 10*time.Second)
	var last string
	for _, m := range msgs {
		if string(m.Key) == "k" {
			last = testenv.HeaderValue(m, txmsg.HeaderID)
		}
	}
	if last != "big" {
		t.Errorf("last message of key k is %q, want the retried big", last)
	}
	if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_dead_letters"); n != 0 {
		t.Errorf("%d dead letters left after retry", n)
	}
}

// With a retention, delivered rows are kept, then purged in batches.
func TestRelayRetentionKeepsThenPurges(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	cfg := testConfig(k.Addrs)
	// Long enough that the rows are still kept when the test looks, on a
	// loaded machine.
	cfg.Retention = 3 * time.Second
	cfg.PurgeSchedule = "@every 1s"
	cfg.PurgeBatch = 7
	startEngine(t, d.DB, cfg)
	seq := map[string]int{}
	produceN(t, d.DB, "kept", 5, 30, seq)
	waitDelivered(t, k.Addrs, "kept", 30, 10*time.Second)
	// The last rounds' marks, which copy the rows, may still be under way.
	testenv.Eventually(t, 3*time.Second, func() error {
		if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox_delivered"); n == 0 {
			return errors.New("no delivered rows kept despite the retention")
		}
		return nil
	})
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox_delivered"); n != 0 {
			return fmt.Errorf("%d archived rows not purged yet", n)
		}
		if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox"); n != 0 {
			return fmt.Errorf("%d rows pending", n)
		}
		return nil
	})
}

// errorCounter is a hook that counts errors by kind.
type errorCounter struct {
	mu    sync.Mutex
	kinds map[string]int
}

func (c *errorCounter) Error(_, kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kinds[kind]++
}

func (c *errorCounter) count(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kinds[kind]
}

// Rows written with more shards than the relay leases are reported, not
// silently stranded.
func TestRelayReportsRowsOfShardsNoLeaseCovers(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	p, err := outbox.NewPublisher(outbox.WithShards(64))
	if err != nil {
		t.Fatal(err)
	}
	var stray bool
	for i := 0; !stray; i++ {
		m := msg("stray", fmt.Sprintf("k%d", i), 1)
		if err := p.Publish(context.Background(), d.DB, m); err != nil {
			t.Fatal(err)
		}
		stray = txmsg.Shard(m.Key, "", 64) >= 16
	}
	m := &errorCounter{kinds: map[string]int{}}
	startEngine(t, d.DB, testConfig(k.Addrs), WithHooks(m))
	testenv.Eventually(t, 5*time.Second, func() error {
		if m.count("shard_mismatch") == 0 {
			return errors.New("no shard_mismatch error reported")
		}
		return nil
	})
}

// A relay that dies holding its leases and comes back under the same
// relay.owner (a StatefulSet pod, say) takes its shards back once the old
// leases expire: rows naming an owner without a worker are not renewed.
func TestRelayRestartUnderTheSameOwnerResumes(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	crashDB, err := sql.Open("mysql", d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(k.Addrs)
	cfg.Owner = "pod-0"
	first := startEngine(t, crashDB, cfg)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_relay_leases WHERE owner = 'pod-0' AND expires_at > UTC_TIMESTAMP(6)"); n != 16 {
			return fmt.Errorf("pod-0 holds %d of 16 shards", n)
		}
		return nil
	})
	crashDB.Close()
	first.cancel()
	startEngine(t, d.DB, cfg)
	seq := map[string]int{}
	produceN(t, d.DB, "restart", 10, 40, seq)
	msgs := waitDelivered(t, k.Addrs, "restart", 40, 3*cfg.LeaseTTL+5*time.Second)
	checkOrder(t, msgs, nil)
}

// Kafka refuses one partition's batches several times in a row while the
// others succeed: what was acknowledged is marked, the refused rows are sent
// again in a later round, and every key stays in order.
func TestRelayPartialProduceFailureKeepsKeyOrder(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	// NOT_LEADER_FOR_PARTITION is retriable; Kafka answers it per
	// partition, so a request's other partitions are written.
	refused := k.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "partial", Partitions: []int32{0},
		Err: kerr.NotLeaderForPartition, Count: 5})
	startEngine(t, d.DB, testConfig(k.Addrs))
	seq := map[string]int{}
	produceN(t, d.DB, "partial", 12, 240, seq)
	msgs := waitDelivered(t, k.Addrs, "partial", 240, 30*time.Second)
	checkOrder(t, msgs, nil)
	if n := refused.Hits(); n < 5 {
		t.Fatalf("only %d produce requests refused: the fault never fired", n)
	}
	parts := map[int]bool{}
	for _, m := range msgs {
		parts[m.Partition] = true
	}
	if len(parts) < 2 {
		t.Fatalf("messages landed in %d partitions, want several", len(parts))
	}
}

// A worker whose lease another relay claimed (a COMMIT that landed after the
// lease ran out, say) neither charges an attempt nor dead-letters: the new
// owner may be publishing the same rows. With its lease it does both.
func TestRelayChargingAndDeadLetteringAreFencedByTheLease(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	cfg := testConfig([]string{"127.0.0.1:9"})
	cfg.Shards = 1
	cfg.Owner = "me"
	e, err := New(d.DB, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := publishTx(ctx, d.DB, true, msg("fenced", "k", 1), msg("fenced", "k", 2)); err != nil {
		t.Fatal(err)
	}
	src := e.sources[0]
	rows, err := src.Pending(ctx, d.DB, 0, Limit{Rows: 10, Bytes: 1 << 20})
	if err != nil || len(rows) != 2 {
		t.Fatalf("pending rows: %d, %v", len(rows), err)
	}
	if _, err := d.DB.ExecContext(ctx, `INSERT INTO txmsg_relay_leases (source, shard, owner, version, expires_at)
VALUES (?, 0, 'other', 8, UTC_TIMESTAMP(6) + INTERVAL 1 MINUTE)`, src.Name()); err != nil {
		t.Fatal(err)
	}
	refused := []refusal{{row: rows[0], err: errors.New("try again")}, {row: rows[1], err: errors.New("never"), final: true}}
	attempts := func() int {
		return countRows(t, d.DB, `SELECT COALESCE(SUM(attempts), 0) FROM txmsg_outbox`)
	}
	stale := &shardWorker{src: src, shard: 0, version: 7}
	if _, err := e.charge(ctx, stale, refused[:1]); !errors.Is(err, errLeaseLost) {
		t.Fatalf("a stale worker's charge: %v, want errLeaseLost", err)
	}
	if _, err := e.charge(ctx, stale, refused[1:]); !errors.Is(err, errLeaseLost) {
		t.Fatalf("a stale worker's dead letter: %v, want errLeaseLost", err)
	}
	if n := attempts(); n != 0 {
		t.Fatalf("a stale worker charged %d attempts", n)
	}
	if n := countRows(t, d.DB, `SELECT COUNT(*) FROM txmsg_dead_letters`); n != 0 {
		t.Fatalf("a stale worker dead-lettered %d rows", n)
	}
	if _, err := d.DB.ExecContext(ctx, `UPDATE txmsg_relay_leases SET owner = 'me' WHERE source = ?`, src.Name()); err != nil {
		t.Fatal(err)
	}
	owner := &shardWorker{src: src, shard: 0, version: 8}
	dead, err := e.charge(ctx, owner, refused)
	if err != nil {
		t.Fatal(err)
	}
	if !dead[rows[1].Seq] || dead[rows[0].Seq] {
		t.Fatalf("dead-lettered %v, want only seq %d", dead, rows[1].Seq)
	}
	if n := attempts(); n != 1 {
		t.Fatalf("the owner charged %d attempts, want 1", n)
	}
	if n := countRows(t, d.DB, `SELECT COUNT(*) FROM txmsg_dead_letters`); n != 1 {
		t.Fatalf("the owner dead-lettered %d rows, want 1", n)
	}
}

// A lease round stuck on the database (here a lock on the lease rows)
// gives up by the deadline it would give its workers (lease_ttl −
// heartbeat): the engine reports not ready instead of
// keeping its last answer while its workers' deadlines run out, and is
// ready again once its rounds succeed.
func TestRelayStuckLeaseRoundIsNotReady(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	cfg := testConfig(testenv.NewKafka(t, 1).Addrs)
	cfg.Shards = 2
	r := startEngine(t, d.DB, cfg)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !r.Ready() || countRows(t, d.DB, `SELECT COUNT(*) FROM txmsg_relay_leases WHERE owner <> ''`) != 2 {
			return errors.New("not ready with both leases held")
		}
		return nil
	})
	tx, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.ExecContext(ctx, `SELECT * FROM txmsg_relay_leases FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if r.Ready() {
			return errors.New("ready while its lease rounds wait on a lock")
		}
		return nil
	})
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if !r.Ready() {
			return errors.New("not ready after the lock was released")
		}
		return nil
	})
}
