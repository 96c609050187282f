package relay

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"testing"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// handlerReads sums the row reads the session on conn has made.
func handlerReads(t *testing.T, conn *sql.Conn) int64 {
	t.Helper()
	rows, err := conn.QueryContext(context.Background(), "SHOW SESSION STATUS LIKE 'Handler_read%'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var sum int64
	for rows.Next() {
		var name, v string
		if err := rows.Scan(&name, &v); err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		sum += n
	}
	return sum
}

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
	before := handlerReads(t, conn)
	n, oldest, err := src.Backlog(ctx, conn)
	if err != nil || n != 3*exactBacklog+50 || oldest.IsZero() {
		t.Fatalf("%d rows: Backlog = %d, %v, %v; want %d, a time, nil", 3*exactBacklog+50, n, oldest, err, 3*exactBacklog+50)
	}
	// SHOW STATUS itself reads a few rows.
	if reads := handlerReads(t, conn) - before; reads > 200 {
		t.Fatalf("reading the backlog of %d rows read %d rows, want a few", n, reads)
	}
}
