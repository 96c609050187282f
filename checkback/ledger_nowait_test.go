package checkback

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg/internal/testenv"
)

func TestCheckbackNoWaitServer(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{
		"10.11.19-MariaDB-0+deb12u1": true,
		"11.4.2-MariaDB":             true,
		"10.3.39-MariaDB":            true,
		"10.2.44-MariaDB":            false,
		"8.0.36":                     false,
		"8.4.0-MariaDB-lookalike":    false,
		"MariaDB":                    false,
	} {
		if got := noWaitServer(v); got != want {
			t.Errorf("noWaitServer(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestCheckbackRefusal: only the server refusing the statement turns the
// one-statement markers off; a lock, a deadlock or a lost connection pass.
func TestCheckbackRefusal(t *testing.T) {
	t.Parallel()
	for msg, want := range map[string]bool{
		"Error 1064 (42000): You have an error in your SQL syntax":               true,
		"Error 1193 (HY000): Unknown system variable 'innodb_lock_wait_timeout'": true,
		"Error 1205 (HY000): Lock wait timeout exceeded; try restarting":         false,
		"Error 1213 (40001): Deadlock found when trying to get lock":             false,
		"invalid connection": false,
		"read tcp 127.0.0.1:1->127.0.0.1:3306: read: connection reset by peer": false,
	} {
		if got := refusal(fmt.Errorf("checkback: ledger: %w", errors.New(msg))); got != want {
			t.Errorf("refusal(%q) = %v, want %v", msg, got, want)
		}
	}
}

// TestCheckbackMarkNoWaitFailsAtOnceLeavingNothing: the one-statement
// markers fail at once, having written none of their rows, when an open
// transaction holds one of them, and stay in use for the next batch; a
// Ledger made WithoutBatchMarkers never tries them.
func TestCheckbackMarkNoWaitFailsAtOnceLeavingNothing(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	l, err := LedgerChecker(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	skipUnlessNoWait(t, db)
	tx, err := db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if err := l.Record(ctx, tx, "m"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = l.markNoWait(ctx, []string{"a", "m", "z"})
	if err == nil || !strings.Contains(err.Error(), "1205") {
		t.Fatalf("markers beside an open transaction's row: %v, want error 1205", err)
	}
	// innodb_lock_wait_timeout is 50s by default: anything near it waited.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the statement took %v: it waited", d)
	}
	var n int
	if err := db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM txmsg_checkback_ledger WHERE msg_id IN ('a', 'z')`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d markers left behind (%v), want none", n, err)
	}
	if l.noWait.Load() != noWaitYes {
		t.Fatal("a lock the statement would not wait for turned the one-statement markers off")
	}
	off, err := LedgerChecker(db.DB, WithoutBatchMarkers())
	if err != nil {
		t.Fatal(err)
	}
	if err := off.markNoWait(ctx, []string{"b", "c"}); err == nil {
		t.Fatal("a Ledger WithoutBatchMarkers wrote one-statement markers")
	}
}

// TestCheckbackLedgerMarksABatchInOneStatement: where the server takes it,
// the rollback markers of a batch's messages without a row go in with one
// statement (one UTC_TIMESTAMP for all), and each answers rollback.
func TestCheckbackLedgerMarksABatchInOneStatement(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	skipUnlessNoWait(t, db)
	l, err := LedgerChecker(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	var reqs []Request
	for i := range 10 {
		reqs = append(reqs, Request{ID: fmt.Sprintf("n%d", i)})
	}
	as, err := l.CheckBatch(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range as {
		if a != AnswerRollback {
			t.Fatalf("%s: %v, want rollback", reqs[i].ID, a)
		}
	}
	var stamps int
	if err := db.DB.QueryRowContext(ctx, `SELECT COUNT(DISTINCT created_at) FROM txmsg_checkback_ledger WHERE state = 2`).Scan(&stamps); err != nil {
		t.Fatal(err)
	}
	if stamps != 1 {
		t.Fatalf("markers written at %d instants, want 1 (one statement)", stamps)
	}
}

// skipUnlessNoWait skips the test unless db's server takes one-statement
// markers (MariaDB 10.3 or later).
func skipUnlessNoWait(t *testing.T, db *testenv.Database) {
	t.Helper()
	var version string
	if err := db.DB.QueryRow("SELECT VERSION()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if !noWaitServer(version) {
		t.Skipf("server %s: no one-statement markers", version)
	}
}
