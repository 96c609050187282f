package checkback_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
)

// A Ledger whose pool reads uncommitted rows (the DSN's or the server's
// default) must not take the row of a transaction still open for a commit:
// the transaction may yet roll back, and the broker would publish a phantom.
func TestCheckbackLedgerIgnoresUncommittedRowsUnderReadUncommitted(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	l, err := checkback.LedgerChecker(db.ReadUncommittedPool(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tx := openRecorded(t, db, l, "open")
	// The check of the open transaction waits for it until the deadline,
	// then answers unknown; the other is answered.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	as, err := l.CheckBatch(wctx, []checkback.Request{{ID: "open"}, {ID: "never"}})
	if err != nil || len(as) != 2 || as[0] != checkback.AnswerUnknown || as[1] != checkback.AnswerRollback {
		t.Fatalf("batch beside an open transaction: %v %v, want [unknown rollback]", as, err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	for _, ask := range []func() (checkback.Answer, error){
		func() (checkback.Answer, error) { return l.Check(ctx, checkback.Request{ID: "open"}) },
		func() (checkback.Answer, error) {
			as, err := l.CheckBatch(ctx, []checkback.Request{{ID: "open"}})
			if err != nil {
				return 0, err
			}
			return as[0], nil
		},
	} {
		if a, err := ask(); err != nil || a != checkback.AnswerRollback {
			t.Fatalf("after the rollback: %v %v, want rollback", a, err)
		}
	}
}

// A Ledger whose pool runs with autocommit off still commits what it
// writes: a rollback marker left uncommitted on a pooled connection would
// make the late transaction wait for its lock instead of failing at once,
// and a purge would delete nothing for anyone else.
func TestCheckbackLedgerCommitsWithAutocommitOff(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	l, err := checkback.LedgerChecker(db.Pool(t, "autocommit=0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	as, err := l.CheckBatch(ctx, []checkback.Request{{ID: "b1"}, {ID: "b2"}})
	if err != nil || len(as) != 2 || as[0] != checkback.AnswerRollback || as[1] != checkback.AnswerRollback {
		t.Fatalf("batch: %v %v, want [rollback rollback]", as, err)
	}
	if a, err := l.Check(ctx, checkback.Request{ID: "c1"}); err != nil || a != checkback.AnswerRollback {
		t.Fatalf("check: %v %v, want rollback", a, err)
	}
	for _, id := range []string{"b1", "b2", "c1"} {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		tx, err := db.DB.BeginTx(rctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = l.Record(rctx, tx, id)
		_ = tx.Rollback()
		rcancel()
		if !errors.Is(err, checkback.ErrAlreadyDecided) {
			t.Fatalf("late transaction of %s: %v, want ErrAlreadyDecided at once", id, err)
		}
	}
	if n, err := l.Purge(ctx, time.Now().Add(time.Hour), 2); err != nil || n != 3 {
		t.Fatalf("purge: %d %v, want 3", n, err)
	}
	var left int
	if err := db.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM txmsg_checkback_ledger").Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d ledger rows left after the purge (%v), want 0", left, err)
	}
}
