package consumer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg/internal/testenv"
)

func countInbox(t testing.TB, db *sql.DB, group string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM txmsg_inbox WHERE consumer_group = ?`, group).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func insertInboxRows(t testing.TB, db *sql.DB, group string, n int, at time.Time) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := db.Exec(`INSERT INTO txmsg_inbox (consumer_group, msg_id, topic, kafka_partition, kafka_offset, processed_at) VALUES (?, ?, 't', 0, ?, ?)`,
			group, fmt.Sprintf("%s-%d-%d", group, at.UnixNano(), i), i, at); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConsumerInboxPurge: PurgeInbox deletes the group's rows past the
// retention, in batches, and leaves newer rows and other groups' rows.
func TestConsumerInboxPurge(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	insertInboxRows(t, db, "g", 7, now.Add(-2*time.Hour))
	insertInboxRows(t, db, "g", 3, now.Add(-30*time.Minute))
	insertInboxRows(t, db, "other", 4, now.Add(-2*time.Hour))
	c, err := New([]string{"127.0.0.1:1"}, "g", []string{"t"}, WithInbox(db),
		WithInboxRetention(time.Hour, time.Hour, 2), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.PurgeInbox(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 7 || countInbox(t, db, "g") != 3 || countInbox(t, db, "other") != 4 {
		t.Fatalf("purged %d; left %d of g and %d of other; want 7, 3, 4", n, countInbox(t, db, "g"), countInbox(t, db, "other"))
	}
}

// TestConsumerInboxPurgeDoesNotWaitForTheConsumer: a purge running while
// a handler's transaction holds a new inbox row of the group (uncommitted)
// deletes the old rows without waiting for that transaction, as the purge
// did when its DELETE walked the group, or the purge index past its cutoff,
// with locking reads.
func TestConsumerInboxPurgeDoesNotWaitForTheConsumer(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	now := time.Now().UTC()
	insertInboxRows(t, db, "g", 5, now.Add(-2*time.Hour))
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	for _, id := range []string{"0-new", "z-new"} {
		if _, err := tx.Exec(insertInbox, "g", id, "t", 0, 1, now); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New([]string{"127.0.0.1:1"}, "g", []string{"t"}, WithInbox(db),
		WithInboxRetention(time.Hour, time.Hour, 2), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := c.PurgeInbox(ctx); n != 5 || err != nil {
		t.Fatalf("purged %d, %v; want 5 while the handler's transaction is open", n, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := countInbox(t, db, "g"); n != 2 {
		t.Fatalf("%d inbox rows left, want the handler's 2", n)
	}
}

// TestConsumerInboxPurgeReadsOnlyWhatItDeletes: beside 20,000 newer rows
// of the group, a purge of 5 reads a few index entries. (The consumer's
// clock has nanoseconds; sent as they are, MariaDB read the whole group.)
func TestConsumerInboxPurgeReadsOnlyWhatItDeletes(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	db.SetMaxOpenConns(1) // one session, whose counters the test reads
	now := time.Now()
	insertInboxRows(t, db, "g", 5, now.Add(-2*time.Hour).UTC())
	digits := `(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
  UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)`
	if _, err := db.Exec(`INSERT INTO txmsg_inbox (consumer_group, msg_id, topic, kafka_partition, kafka_offset, processed_at)
SELECT 'g', CONCAT('new-', k), 't', 0, k, UTC_TIMESTAMP(6) FROM (SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d AS k
  FROM ` + digits + ` a, ` + digits + ` b, ` + digits + ` c, ` + digits + ` e, ` + digits + ` f) n WHERE k < 20000`); err != nil {
		t.Fatal(err)
	}
	c, err := New([]string{"127.0.0.1:1"}, "g", []string{"t"}, WithInbox(db),
		WithInboxRetention(time.Hour, time.Hour, 100), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	before := testenv.HandlerReads(t, db)
	n, err := c.PurgeInbox(context.Background())
	reads := testenv.HandlerReads(t, db) - before
	if n != 5 || err != nil {
		t.Fatalf("purged %d, %v; want 5", n, err)
	}
	if reads > 100 {
		t.Errorf("a purge of 5 made %d row reads beside 20,000 newer rows of the group, want at most 100", reads)
	}
}

// TestConsumerInboxPurgeJob: Run purges the inbox every purge interval.
func TestConsumerInboxPurgeJob(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	k := testenv.NewKafka(t, 1)
	produce(t, k.Addrs, record("t", "k", "1", "0"))
	insertInboxRows(t, db, "g", 5, time.Now().UTC().Add(-2*time.Hour))
	c, err := New(k.Addrs, "g", []string{"t"}, WithInbox(db), fastGroup(), WithInboxRetention(time.Hour, 100*time.Millisecond, 2))
	if err != nil {
		t.Fatal(err)
	}
	noop := HandlerFunc(func(context.Context, Message) error { return nil })
	start(t, c, noop)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := countInbox(t, db, "g"); n != 0 {
			return fmt.Errorf("%d inbox rows left", n)
		}
		return nil
	})
	if err := c.Run(context.Background(), noop); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
}

// TestConsumerTxHandlerPanicRollsBack: a TxHandlerFunc that panics after
// writing has its transaction rolled back (no effect, no inbox row, no
// leaked connection) and is retried.
func TestConsumerTxHandlerPanicRollsBack(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	k := testenv.NewKafka(t, 1)
	createEffectsTable(t, db)
	produce(t, k.Addrs, record("t", "k", "a", "0"), record("t", "k", "b", "1"), record("t", "k", "c", "2"))
	c, err := New(k.Addrs, "g", []string{"t"}, WithInbox(db), fastGroup(), WithBackoff(10*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, m Message) error {
		if err := insertEffect(ctx, tx, m); err != nil {
			return err
		}
		if m.ID == "b" && m.Attempt == 1 {
			panic("bug after the write")
		}
		return nil
	}))
	testenv.Eventually(t, 20*time.Second, func() error { return checkEffects(db, 3) })
	r.stop(t)
	if n := countInbox(t, db, "g"); n != 3 {
		t.Fatalf("%d inbox rows, want 3", n)
	}
	if s := db.Stats(); s.InUse != 0 {
		t.Fatalf("%d connections still in use after Run returned", s.InUse)
	}
}

// TestConsumerInboxLongIDs: txmsg-id headers longer than the inbox column
// are deduplicated by their digest: two ids sharing their first 320 bytes
// are two messages, and a repeat of one is a duplicate.
func TestConsumerInboxLongIDs(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	k := testenv.NewKafka(t, 1)
	createEffectsTable(t, db)
	long := strings.Repeat("x", 320) // the width of txmsg_inbox.msg_id
	produce(t, k.Addrs, record("t", "k", long+"-a", "0"), record("t", "k", long+"-b", "1"), record("t", "k", long+"-a", "0"))
	m := &recorder{}
	c, err := New(k.Addrs, "g", []string{"t"}, WithInbox(db), fastGroup(), WithHooks(m),
		WithBackoff(10*time.Millisecond, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, m Message) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO effects (msg_id, k, n) VALUES (?, ?, ?)`,
			strings.TrimPrefix(m.ID, long), string(m.Key), string(m.Value))
		return err
	}))
	testenv.Eventually(t, 20*time.Second, func() error {
		if err := checkEffects(db, 2); err != nil {
			return err
		}
		if d := m.get(&m.dup); d != 1 {
			return fmt.Errorf("%d duplicates skipped, want 1", d)
		}
		return nil
	})
	r.stop(t)
	if n := countInbox(t, db, "g"); n != 2 {
		t.Fatalf("%d inbox rows, want 2", n)
	}
	if d := m.get(&m.dead); d != 0 {
		t.Fatalf("%d messages dead-lettered, want 0", d)
	}
}
