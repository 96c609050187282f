package checkbacktest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg/checkback"
)

// Harness connects the suite to one Checker implementation.
type Harness struct {
	// Checker is the implementation under test.
	Checker checkback.Checker
	// Begin starts a local transaction that records message id (as the
	// producer does before its business writes) and returns the function
	// that ends it: commit or roll back. Begin returns an error when the
	// record is refused because a check already decided the message.
	Begin func(ctx context.Context, id string) (end func(commit bool) error, err error)
}

var seq atomic.Int64

func newID() string {
	return fmt.Sprintf("conf-%d-%d", time.Now().UnixNano(), seq.Add(1))
}

func check(t *testing.T, h Harness, id string) checkback.Answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := h.Checker.Check(ctx, checkback.Request{ID: id, ProducerGroup: "conformance", Topic: "t", CheckCount: 1})
	if err != nil {
		t.Fatalf("check %s: %v", id, err)
	}
	return a
}

// Run runs the suite; newHarness gives each subtest a fresh Harness.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("CommittedAnswersCommit", func(t *testing.T) {
		h := newHarness(t)
		id := newID()
		end, err := h.Begin(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if err := end(true); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if a := check(t, h, id); a != checkback.AnswerCommit {
				t.Fatalf("committed transaction: answer %v, want commit", a)
			}
		}
	})
	t.Run("RolledBackAnswersRollback", func(t *testing.T) {
		h := newHarness(t)
		id := newID()
		end, err := h.Begin(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if err := end(false); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if a := check(t, h, id); a != checkback.AnswerRollback {
				t.Fatalf("rolled back transaction: answer %v, want rollback", a)
			}
		}
	})
	t.Run("CheckWinsOverLateTransaction", func(t *testing.T) {
		h := newHarness(t)
		id := newID()
		if a := check(t, h, id); a != checkback.AnswerRollback {
			t.Fatalf("no transaction: answer %v, want rollback", a)
		}
		end, err := h.Begin(context.Background(), id)
		if err == nil {
			if cerr := end(true); cerr == nil {
				t.Fatal("a transaction that began after a rollback answer committed")
			}
		}
		if a := check(t, h, id); a != checkback.AnswerRollback {
			t.Fatalf("after the late transaction: answer %v, want rollback", a)
		}
	})
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("CheckDuringOpenTransaction/commit=%v", commit), func(t *testing.T) {
			h := newHarness(t)
			id := newID()
			end, err := h.Begin(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan checkback.Answer, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				a, _ := h.Checker.Check(ctx, checkback.Request{ID: id, CheckCount: 1})
				got <- a
			}()
			// Whether the check runs before or after the transaction ends,
			// its answer must match the outcome, and the outcome must stand.
			if err := end(commit); err != nil {
				t.Fatalf("end(commit=%v) with a check in flight: %v", commit, err)
			}
			want := checkback.AnswerRollback
			if commit {
				want = checkback.AnswerCommit
			}
			select {
			case a := <-got:
				if a != want {
					t.Fatalf("check during an open transaction: answer %v, want %v", a, want)
				}
			case <-time.After(40 * time.Second):
				t.Fatal("check during an open transaction: no answer within 40s, although its context ended after 30s")
			}
			if a := check(t, h, id); a != want {
				t.Fatalf("check after: answer %v, want %v", a, want)
			}
		})
	}
}
