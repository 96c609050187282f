package broker

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/relay"
	"github.com/txmsg/txmsg/relay/relaytest"
)

func TestBrokerHalfSourceConformance(t *testing.T) {
	t.Parallel()
	relaytest.Run(t, func(t *testing.T) relaytest.Env {
		env := newAPIEnv(t) // shards: 4
		return relaytest.Env{
			Source: NewHalfSource(),
			DB:     env.db.DB,
			Shards: 4,
			Add: func(ctx context.Context, msgs ...txmsg.Message) error {
				for _, m := range msgs {
					id, err := env.store.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g", Message: m})
					if err != nil {
						return err
					}
					if _, err := env.store.Commit(ctx, id); err != nil {
						return err
					}
				}
				return nil
			},
			Keeps: true,
		}
	})
}

func TestBrokerHalfSource(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	db := env.db.DB
	src := NewHalfSource()
	key := []byte("same-key")
	shard := txmsg.Shard(key, "", 4)
	var ids []string
	for i := range 4 {
		ids = append(ids, prepareOne(t, env.store, halfmsg.PrepareRequest{Message: txmsg.Message{Key: key,
			Headers: []txmsg.Header{{Key: "h", Value: []byte{byte('a' + i)}}}}}))
	}
	// Commit out of order: delivery follows seq, committed rows only.
	for _, id := range []string{ids[2], ids[0], ids[3]} {
		if _, err := env.store.Commit(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.store.Rollback(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	rows, err := src.Pending(ctx, db, shard, relay.Limit{Rows: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0].ID != ids[0] || rows[1].ID != ids[2] || rows[2].ID != ids[3] ||
		string(rows[1].Headers[0].Value) != "c" || rows[0].Shard != shard {
		t.Fatalf("pending: %+v", rows)
	}
	if n, oldest, err := src.Backlog(ctx, db); err != nil || n != 3 || oldest.IsZero() {
		t.Fatalf("backlog %d %v %v", n, oldest, err)
	}
	if err := src.Failed(ctx, db, rows[2:], "too large"); err != nil {
		t.Fatal(err)
	}
	if err := src.Delivered(ctx, db, rows[:2]); err != nil {
		t.Fatal(err)
	}
	if err := src.Remove(ctx, db, rows[2:]); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]halfmsg.State{ids[0]: halfmsg.StateDelivered, ids[1]: halfmsg.StateRolledBack, ids[2]: halfmsg.StateDelivered, ids[3]: halfmsg.StateDead} {
		info, err := env.store.Get(ctx, id)
		if err != nil || info.State != want {
			t.Fatalf("%s: %s (%v), want %s", id, info.State, err, want)
		}
		if want == halfmsg.StateDead && (info.Attempts != 1 || info.LastError != "too large") {
			t.Fatalf("dead: %+v", info)
		}
	}
	// Commit stays idempotent after delivery and dead-lettering.
	for _, id := range []string{ids[0], ids[3]} {
		if _, err := env.store.Commit(ctx, id); err != nil {
			t.Fatalf("commit of %s after delivery: %v", id, err)
		}
	}
	if rows, err := src.Pending(ctx, db, shard, relay.Limit{Rows: 10}); err != nil || len(rows) != 0 {
		t.Fatalf("pending after delivery: %v %v", rows, err)
	}
	// Purge takes delivered and rolled back rows, leaving discarded and
	// prepared ones.
	discarded := prepareOne(t, env.store, halfmsg.PrepareRequest{})
	if _, err := db.ExecContext(ctx, `UPDATE txmsg_half_messages SET state = ? WHERE id = ?`, halfmsg.StateDiscarded, discarded); err != nil {
		t.Fatal(err)
	}
	prepared := prepareOne(t, env.store, halfmsg.PrepareRequest{})
	for _, id := range []string{ids[0], discarded} {
		if _, err := db.ExecContext(ctx, `INSERT INTO txmsg_half_checks (msg_id, check_no, result, latency_us, checked_at)
VALUES (?, 1, 'unknown', 10, UTC_TIMESTAMP(6))`, id); err != nil {
			t.Fatal(err)
		}
	}
	var p relay.Purger = src
	if n, err := p.Purge(ctx, db, time.Now().Add(-time.Hour), 100); err != nil || n != 0 {
		t.Fatalf("purge of nothing old: %d %v", n, err)
	}
	if n, err := p.Purge(ctx, db, time.Now().Add(time.Hour), 2); err != nil || n != 2 {
		t.Fatalf("purge limited to 2: %d %v", n, err)
	}
	if n, err := p.Purge(ctx, db, time.Now().Add(time.Hour), 100); err != nil || n != 1 {
		t.Fatalf("purge the rest: %d %v", n, err)
	}
	for _, id := range []string{discarded, prepared, ids[3]} {
		if _, err := env.store.Get(ctx, id); err != nil {
			t.Fatalf("%s purged: %v", id, err)
		}
	}
	var left []string
	hist, err := db.QueryContext(ctx, `SELECT msg_id FROM txmsg_half_checks`)
	if err != nil {
		t.Fatal(err)
	}
	defer hist.Close()
	for hist.Next() {
		var id string
		if err := hist.Scan(&id); err != nil {
			t.Fatal(err)
		}
		left = append(left, id)
	}
	if len(left) != 1 || left[0] != discarded {
		t.Fatalf("check history left %v, want only the discarded message's", left)
	}
}

// The purge reads the rolled back rows it deletes, not every one the
// retention keeps: resolving a message sets next_check_at, so the due
// index orders rolled back rows by when they were resolved.
func TestBrokerHalfPurgeReadsOnlyWhatItDeletes(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	store, err := NewStore(db.DB, WithAddressPolicy(loopback()))
	if err != nil {
		t.Fatal(err)
	}
	insertHalfRows(t, db.DB, "kept", 20000, time.Now().UTC(), halfmsg.StateRolledBack)
	var old []string
	for range 10 {
		id := prepareOne(t, store, halfmsg.PrepareRequest{})
		if _, err := store.Rollback(ctx, id); err != nil {
			t.Fatal(err)
		}
		old = append(old, id)
	}
	conn, err := db.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The cutoff is read from the server's clock, which stamped the
	// rollbacks: they resolved before it, the kept rows a second after.
	var cutoff time.Time
	if err := db.DB.QueryRowContext(ctx, `SELECT UTC_TIMESTAMP(6) + INTERVAL 1 MICROSECOND`).Scan(&cutoff); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DB.ExecContext(ctx, `UPDATE txmsg_half_messages SET resolved_at = ? + INTERVAL 1 SECOND, next_check_at = ? + INTERVAL 1 SECOND
WHERE producer_group = 'kept'`, cutoff, cutoff); err != nil {
		t.Fatal(err)
	}
	before := testenv.HandlerReads(t, conn)
	n, err := NewHalfSource().Purge(ctx, conn, cutoff, 100)
	reads := testenv.HandlerReads(t, conn) - before
	if err != nil || n != 10 {
		t.Fatalf("purged %d, %v; want the 10 rolled back before the cutoff", n, err)
	}
	for _, id := range old {
		if _, err := store.Get(ctx, id); !errors.Is(err, txmsg.ErrNotFound) {
			t.Fatalf("%s after the purge: %v, want not found", id, err)
		}
	}
	if reads > 100 {
		t.Errorf("the purge of 10 rows made %d row reads beside 20,000 rolled back rows it keeps, want at most 100", reads)
	}
}

// While purge lags (here a read view held open), the deliver index still
// holds an entry for every row delivered since; left to choose, MariaDB
// read the table in seq order for the poll's LIMIT instead, through every
// delivered row, which the retention keeps for a day (475 pages here, 65
// with the index).
func TestBrokerHalfPollReadsTheDeliverIndexWhilePurgeLags(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	const rows, left = 40000, 10
	insertHalfRows(t, db.DB, "g", rows, time.Now().UTC(), halfmsg.StateCommitted)
	testenv.HoldReadView(t, db.DB)
	var high int64
	if err := db.DB.QueryRow("SELECT MAX(seq) FROM txmsg_half_messages").Scan(&high); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DB.Exec("UPDATE txmsg_half_messages SET state = ?, delivered_at = UTC_TIMESTAMP(6) WHERE seq <= ?",
		halfmsg.StateDelivered, high-left); err != nil {
		t.Fatal(err)
	}
	got, err := NewHalfSource().Pending(ctx, db.DB, 0, relay.Limit{Rows: 1000, Bytes: 1 << 20})
	if err != nil || len(got) != left {
		t.Fatalf("pending: %d rows, %v; want the %d committed", len(got), err, left)
	}
	if pages := testenv.PagesAccessed(t, db.DB, pendingHalf, halfmsg.StateCommitted, 0, 1000); pages > 250 {
		t.Fatalf("the poll accessed %d pages beside %d delivered rows; want at most 250", pages, rows-left)
	}
}

// BusyShards lists the shards holding committed rows, those below the count
// asked about, and reads the same few index entries however many rows a
// shard holds.
func TestBrokerHalfSourceBusyShards(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	// Shard 0: 5,000 committed rows; 1: committed; 2: prepared; 3:
	// delivered; 5: committed.
	insertHalfRows(t, db.DB, "g", 5000, time.Now().UTC(), halfmsg.StateCommitted)
	for shard, st := range map[int]halfmsg.State{1: halfmsg.StateCommitted, 2: halfmsg.StatePrepared,
		3: halfmsg.StateDelivered, 5: halfmsg.StateCommitted} {
		if _, err := db.DB.ExecContext(ctx, `INSERT INTO txmsg_half_messages (id, shard, state, producer_group, topic, value,
  check_timeout_ms, max_checks, next_check_at, created_at, updated_at)
VALUES (?, ?, ?, 'g', 'orders', 'v', 1000, 5, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))`,
			"busy-"+strconv.Itoa(shard), shard, st); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := db.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reads := func() (n int64) {
		t.Helper()
		rows, err := conn.QueryContext(ctx, `SHOW SESSION STATUS WHERE Variable_name IN ('Handler_read_key', 'Handler_read_next')`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var v int64
			if err := rows.Scan(&name, &v); err != nil {
				t.Fatal(err)
			}
			n += v
		}
		return n
	}
	src := NewHalfSource()
	for shards, want := range map[int][]int{4: {0, 1}, 8: {0, 1, 5}} {
		before := reads()
		got, err := src.BusyShards(ctx, conn, shards)
		if err != nil {
			t.Fatal(err)
		}
		n := reads() - before
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%d shards: busy %v, want %v", shards, got, want)
		}
		// A dive a shard, and the status queries' own reads: not one per
		// committed row of shard 0.
		if n > 200 {
			t.Errorf("%d shards: %d index reads for 5,000 committed rows", shards, n)
		}
	}
}
