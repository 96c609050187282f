package relay

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// The backlog reading costs the same whatever the backlog: it is exact
// while small and the span of pending seqs above exactBacklog.
func TestRelayOutboxBacklogCostDoesNotGrowWithRows(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	src := NewOutboxSource(false)
	conn, err := d.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if n, oldest, err := src.Backlog(ctx, conn); err != nil || n != 0 || !oldest.IsZero() {
		t.Fatalf("empty outbox: Backlog = %d, %v, %v; want 0, zero time, nil", n, oldest, err)
	}
	publish := func(n int) {
		for i := 0; i < n; i += 1000 {
			msgs := make([]txmsg.Message, 0, 1000)
			for j := i; j < min(i+1000, n); j++ {
				msgs = append(msgs, txmsg.Message{Topic: "backlog", Key: []byte(fmt.Sprint(j % 7)), Value: []byte("v")})
			}
			if err := outbox.Publish(ctx, d.DB, msgs...); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(50)
	if n, oldest, err := src.Backlog(ctx, conn); err != nil || n != 50 || oldest.IsZero() {
		t.Fatalf("50 rows: Backlog = %d, %v, %v; want 50, a time, nil", n, oldest, err)
	}
	publish(3 * exactBacklog)
	before := testenv.HandlerReads(t, conn)
	n, oldest, err := src.Backlog(ctx, conn)
	if err != nil || n != 3*exactBacklog+50 || oldest.IsZero() {
		t.Fatalf("%d rows: Backlog = %d, %v, %v; want %d, a time, nil", 3*exactBacklog+50, n, oldest, err, 3*exactBacklog+50)
	}
	// SHOW STATUS itself reads a few rows.
	if reads := testenv.HandlerReads(t, conn) - before; reads > 200 {
		t.Fatalf("reading the backlog of %d rows read %d rows, want a few", n, reads)
	}
}

// pageCounter is a Querier that first runs each query under MariaDB's
// ANALYZE FORMAT=JSON and adds up the index pages it accessed.
type pageCounter struct {
	t     *testing.T
	conn  *sql.Conn
	pages int64
}

func (p *pageCounter) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	p.pages += testenv.PagesAccessed(p.t, p.conn, query, args...)
	return p.conn.QueryContext(ctx, query, args...)
}

// A backlog reading from where the last one found each shard's first
// pending row steps over only the rows delivered since, not every delivered
// row purge has not removed yet (which a dive to the seq index's low end
// looks up one by one in the clustered index).
func TestRelayOutboxBacklogStepsOverOnlyNewlyDeliveredRows(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	const rows, left = 3000, 40
	for i := 0; i < rows; i += 1000 {
		msgs := make([]txmsg.Message, 0, 1000)
		for j := i; j < i+1000; j++ {
			msgs = append(msgs, txmsg.Message{Topic: "backlog", Key: []byte(fmt.Sprint(j % 50)), Value: make([]byte, 256)})
		}
		if err := outbox.Publish(ctx, d.DB, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	// A read view older than the deletes keeps purge from removing them.
	testenv.HoldReadView(t, d.DB)
	conn, err := d.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	src := NewOutboxSource(false)
	from := make([]int64, 16)
	_, _, lows, err := src.BacklogFrom(ctx, conn, from)
	if err != nil {
		t.Fatal(err)
	}
	var top int64
	if err := d.DB.QueryRow("SELECT MAX(seq) FROM txmsg_outbox").Scan(&top); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DB.Exec("DELETE FROM txmsg_outbox WHERE seq <= ?", top-left); err != nil {
		t.Fatal(err)
	}
	// The first reading after the deliveries steps over them once.
	for s, low := range lows {
		from[s] = max(low, 0)
	}
	if _, _, lows, err = src.BacklogFrom(ctx, conn, from); err != nil {
		t.Fatal(err)
	}
	for s, low := range lows {
		if low >= 0 {
			from[s] = low
		}
	}
	pc := &pageCounter{t: t, conn: conn}
	n, oldest, _, err := src.BacklogFrom(ctx, pc, from)
	if err != nil || n != left || oldest.IsZero() {
		t.Fatalf("Backlog = %d, %v, %v; want %d, a time, nil", n, oldest, err, left)
	}
	// MIN(seq) is answered by the optimizer, outside ANALYZE's counts; this
	// is the same walk from the seq index's low end.
	old := testenv.PagesAccessed(t, conn, "SELECT seq FROM txmsg_outbox FORCE INDEX (txmsg_outbox_seq) ORDER BY seq LIMIT 1")
	if pc.pages > 400 {
		t.Fatalf("the backlog reading accessed %d pages with %d delivered rows unpurged (a dive to the seq index: %d), want a few per shard", pc.pages, rows-left, old)
	}
	t.Logf("backlog reading: %d pages; MIN(seq) over the seq index: %d pages", pc.pages, old)
}
