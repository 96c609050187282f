package checkback_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
)

func TestCheckbackLedgerWaitsForOpenTransaction(t *testing.T) {
	t.Parallel()
	db, l := newLedger(t)
	ctx := context.Background()
	done := recordCommitted(t, db, l, "done")
	// A batch (checkback.Ledger.CheckBatch) waits the same way, and answers
	// the other checks it carries once the transaction ends.
	for _, c := range []struct {
		commit, batch bool
	}{{true, false}, {false, false}, {true, true}, {false, true}} {
		commit := c.commit
		id := fmt.Sprintf("open-%s-batch-%v", map[bool]string{true: "commit", false: "rollback"}[commit], c.batch)
		tx, err := db.DB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback() })
		if err := l.Record(ctx, tx, id); err != nil {
			t.Fatal(err)
		}
		type result struct {
			a   checkback.Answer
			err error
		}
		got := make(chan result, 1)
		go func() {
			// Bounded, so that a check that never ends fails the test below
			// instead of hanging it.
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if !c.batch {
				a, err := l.Check(ctx, checkback.Request{ID: id})
				got <- result{a, err}
				return
			}
			as, err := l.CheckBatch(ctx, []checkback.Request{{ID: "none-" + id}, {ID: id}, {ID: done}})
			if err == nil && (len(as) != 3 || as[0] != checkback.AnswerRollback || as[2] != checkback.AnswerCommit) {
				err = fmt.Errorf("the batch answered %v; want rollback for a message never recorded, commit for one committed", as)
			}
			if err != nil {
				got <- result{0, err}
				return
			}
			got <- result{as[1], nil}
		}()
		testenv.Eventually(t, 10*time.Second, func() error {
			var n int
			if err := db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = ? AND INFO LIKE 'INSERT IGNORE%'`, db.Name).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return errors.New("check not waiting yet")
			}
			return nil
		})
		select {
		case r := <-got:
			t.Fatalf("%s: check answered %v, %v while the transaction was open", id, r.a, r.err)
		default:
		}
		want := checkback.AnswerRollback
		if commit {
			want = checkback.AnswerCommit
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
		var r result
		select {
		case r = <-got:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: check did not return within 30s of the transaction's end", id)
		}
		if r.err != nil || r.a != want {
			t.Fatalf("%s: check answered %v, %v; want %v", id, r.a, r.err, want)
		}
	}
}

func TestCheckbackLedgerCheckWinsOverLateTransaction(t *testing.T) {
	t.Parallel()
	db, l := newLedger(t)
	ctx := context.Background()
	for range 2 { // repeated checks give the same answer
		if a, err := l.Check(ctx, checkback.Request{ID: "late"}); err != nil || a != checkback.AnswerRollback {
			t.Fatalf("check without a ledger row: %v, %v", a, err)
		}
	}
	tx, err := db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	err = l.Record(ctx, tx, "late")
	if !errors.Is(err, checkback.ErrAlreadyDecided) || !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("late Record: %v, want ErrAlreadyDecided", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// A committed row answers commit, every time.
	tx, err = db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, tx, "done"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if a, err := l.Check(ctx, checkback.Request{ID: "done"}); err != nil || a != checkback.AnswerCommit {
			t.Fatalf("check with a committed row: %v, %v", a, err)
		}
	}
	// Cleanup deletes old rows only.
	n, err := l.Purge(ctx, time.Now().Add(-time.Hour), 10)
	if err != nil || n != 0 {
		t.Fatalf("purge of nothing old: %d, %v", n, err)
	}
	n, err = l.Purge(ctx, time.Now().Add(time.Hour), 1)
	if err != nil || n != 2 {
		t.Fatalf("purge: %d, %v; want 2", n, err)
	}
}

func TestCheckbackLedgerCleanupJob(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs testenv.LogBuffer
	l, err := checkback.LedgerChecker(db.DB, checkback.WithLedgerLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Check(ctx, checkback.Request{ID: "old"}); err != nil {
		t.Fatal(err)
	}
	if err := l.RunCleanup(ctx, time.Second, 0); err == nil {
		t.Fatal("zero retention: want an error")
	}
	done := make(chan error, 1)
	go func() { done <- l.RunCleanup(ctx, 100*time.Millisecond, time.Millisecond) }()
	testenv.Eventually(t, 10*time.Second, func() error {
		var n int
		if err := db.DB.QueryRow(`SELECT COUNT(*) FROM txmsg_checkback_ledger`).Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			return errors.New("ledger row not purged yet")
		}
		// The purge is logged through the logger given.
		if !strings.Contains(logs.String(), "checkback: ledger cleanup") || !strings.Contains(logs.String(), "deleted=1") {
			return fmt.Errorf("no cleanup line logged yet: %q", logs.String())
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("RunCleanup did not return within 20s of its context's end")
	}
}

// newLedger is a fresh database and a Ledger on it.
func newLedger(t *testing.T) (*testenv.Database, *checkback.Ledger) {
	t.Helper()
	db := testenv.NewDB(t)
	l, err := checkback.LedgerChecker(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	return db, l
}

// openRecorded begins a transaction that records id and stays open, rolled
// back when the test ends.
func openRecorded(t *testing.T, db *testenv.Database, l *checkback.Ledger, id string) *sql.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if err := l.Record(ctx, tx, id); err != nil {
		t.Fatal(err)
	}
	return tx
}

// recordCommitted commits the ledger row of id in a transaction of its own
// and returns id.
func recordCommitted(t *testing.T, db *testenv.Database, l *checkback.Ledger, id string) string {
	t.Helper()
	ctx := context.Background()
	tx, err := db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, tx, id); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return id
}
