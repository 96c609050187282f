package checkback_test

import (
	"context"
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
	db := testenv.NewDB(t)
	ctx := context.Background()
	l, err := checkback.LedgerChecker(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	for _, commit := range []bool{true, false} {
		id := "open-" + map[bool]string{true: "commit", false: "rollback"}[commit]
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
			a, err := l.Check(ctx, checkback.Request{ID: id})
			got <- result{a, err}
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
			t.Fatalf("check answered %v, %v while the transaction was open", r.a, r.err)
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
			t.Fatalf("commit=%v: check did not return within 30s of the transaction's end", commit)
		}
		if r.err != nil || r.a != want {
			t.Fatalf("commit=%v: check answered %v, %v; want %v", commit, r.a, r.err, want)
		}
	}
}

func TestCheckbackLedgerCheckWinsOverLateTransaction(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ctx := context.Background()
	l, err := checkback.LedgerChecker(db.DB)
	if err != nil {
		t.Fatal(err)
	}
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
