package broker

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

// insertHalfRows inserts n half messages of producer group, seq after seq,
// the k-th (from 0) in states[k%len(states)] and created base+k seconds.
// A cross join of digits makes the rows, so a test inserts thousands in one
// statement on MySQL and MariaDB alike.
func insertHalfRows(t *testing.T, db *sql.DB, group string, n int, base time.Time, states ...halfmsg.State) {
	t.Helper()
	digits := `(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
  UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)`
	var cases strings.Builder
	for i, s := range states {
		cases.WriteString(" WHEN " + strconv.Itoa(i) + " THEN " + strconv.Itoa(int(s)))
	}
	q := `INSERT INTO txmsg_half_messages (id, shard, state, producer_group, topic, value, check_timeout_ms,
  max_checks, next_check_at, created_at, updated_at)
SELECT CONCAT(?, '-', k), 0, CASE k MOD ?` + cases.String() + ` END, ?, 'orders', 'v', 1000, 5, ?,
  ? + INTERVAL k SECOND, ?
FROM (SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d AS k
  FROM ` + digits + ` a, ` + digits + ` b, ` + digits + ` c, ` + digits + ` e, ` + digits + ` f) n
WHERE k < ? ORDER BY k`
	if _, err := db.Exec(q, group, len(states), group, base, base, base, n); err != nil {
		t.Fatal(err)
	}
}

func TestBacklogCountsExactlyAndFindsTheOldestOfEveryGroup(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	store, err := NewStore(db.DB, WithAddressPolicy(loopback()))
	if err != nil {
		t.Fatal(err)
	}
	if n, oldest, err := store.PreparedBacklog(ctx); err != nil || n != 0 || !oldest.IsZero() {
		t.Fatalf("empty: %d %v %v", n, oldest, err)
	}
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	// Group a comes first by seq and by name, but b's first prepared message
	// was created an hour earlier: the oldest is found per group.
	insertHalfRows(t, db.DB, "a", 30, base, halfmsg.StatePrepared, halfmsg.StateCommitted, halfmsg.StateDelivered)
	insertHalfRows(t, db.DB, "b", 20, base.Add(-time.Hour), halfmsg.StateCommitted, halfmsg.StatePrepared)
	n, oldest, err := store.PreparedBacklog(ctx)
	if err != nil || n != 10+10 || !oldest.Equal(base.Add(-time.Hour+time.Second)) {
		t.Fatalf("prepared: %d %v %v; want 20 %v", n, oldest, err, base.Add(-time.Hour+time.Second))
	}
	n, oldest, err = (&HalfSource{}).Backlog(ctx, db.DB)
	if err != nil || n != 10+10 || !oldest.Equal(base.Add(-time.Hour)) {
		t.Fatalf("committed: %d %v %v; want 20 %v", n, oldest, err, base.Add(-time.Hour))
	}
}

// Above exactBacklog a reading neither counts nor reads the rows: the count
// is the groups' spans (an upper bound), read with a few index dives.
func TestBacklogAboveTheExactCountReadsAFixedNumberOfRows(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	// 30,000 committed in each of two groups, every other row; the rows of
	// group b come after all of group a's.
	insertHalfRows(t, db.DB, "a", 60000, base.Add(time.Minute), halfmsg.StateCommitted, halfmsg.StateDelivered)
	insertHalfRows(t, db.DB, "b", 60000, base, halfmsg.StateDelivered, halfmsg.StateCommitted)
	conn, err := db.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := testenv.HandlerReads(t, conn)
	n, oldest, err := (&HalfSource{}).Backlog(ctx, conn)
	reads := testenv.HandlerReads(t, conn) - before
	if err != nil || !oldest.Equal(base.Add(time.Second)) {
		t.Fatalf("committed: %d %v %v; want oldest %v", n, oldest, err, base.Add(time.Second))
	}
	// The spans: a's from its first row to its 59,999th, b's from its second
	// to its last.
	if n != 59999+59999 {
		t.Fatalf("committed: %d, want the span 119998 (60000 exactly)", n)
	}
	// Counting up to 10,001 index entries (each read twice: once into the
	// derived table, once out), then a few dives per group; the old COUNT(*),
	// MIN(created_at) read each of the 60,000 committed rows twice.
	if limit := int64(2*exactBacklog + 100); reads > limit {
		t.Fatalf("a reading made %d row reads, want at most %d", reads, limit)
	}
}
