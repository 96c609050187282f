package checkback_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/checkback"
)

// Ledger ids compare byte for byte: the local transaction of "Order-1"
// says nothing about "order-1".
func TestCheckbackLedgerIDsAreCaseSensitive(t *testing.T) {
	t.Parallel()
	db, l := newLedger(t)
	ctx := context.Background()
	tx, err := db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, tx, "Order-1"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]checkback.Answer{"Order-1": checkback.AnswerCommit, "order-1": checkback.AnswerRollback} {
		if a, err := l.Check(ctx, checkback.Request{ID: id}); err != nil || a != want {
			t.Errorf("check %s = %v, %v; want %v", id, a, err, want)
		}
	}
	// "order-2" has its own row, beside "Order-2".
	for _, id := range []string{"Order-2", "order-2"} {
		tx, err := db.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Record(ctx, tx, id); err != nil {
			_ = tx.Rollback()
			t.Fatalf("record %s: %v", id, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// An id the ledger column cannot hold whole is refused, not stored cut: a
// check for the whole id would otherwise find no row and answer rollback for
// a committed transaction.
func TestCheckbackLedgerRefusesIDsTooLongToStore(t *testing.T) {
	t.Parallel()
	db, l := newLedger(t)
	ctx := context.Background()
	tx, err := db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	long := strings.Repeat("x", txmsg.MaxIDLen+1)
	for _, id := range []string{"", long} {
		if err := l.Record(ctx, tx, id); !errors.Is(err, txmsg.ErrInvalidMessage) {
			t.Fatalf("Record(%d bytes): %v, want ErrInvalidMessage", len(id), err)
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM txmsg_checkback_ledger`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d ledger rows (%v), want none", n, err)
	}
	// Nor does a check of such an id put a marker on the id it would be
	// cut to: that message's transaction may still commit.
	if a, err := l.Check(ctx, checkback.Request{ID: long}); !errors.Is(err, txmsg.ErrInvalidMessage) {
		t.Fatalf("Check(%d bytes): %v, %v; want ErrInvalidMessage", len(long), a, err)
	}
	if as, err := l.CheckBatch(ctx, []checkback.Request{{ID: long}}); err != nil || len(as) != 1 || as[0] != checkback.AnswerUnknown {
		t.Fatalf("CheckBatch(%d bytes): %v, %v; want unknown", len(long), as, err)
	}
	if err := db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM txmsg_checkback_ledger`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("checks of an id too long left %d ledger rows (%v), want none", n, err)
	}
}
