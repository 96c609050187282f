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

// ask is how a subtest asks the Checker about one request: alone, or in a
// batch.
type ask func(ctx context.Context, h Harness, req checkback.Request) (checkback.Answer, error)

func askOne(ctx context.Context, h Harness, req checkback.Request) (checkback.Answer, error) {
	return h.Checker.Check(ctx, req)
}

// askInBatch asks about req in the middle of a batch that also asks twice
// about a message no transaction recorded, which must answer rollback both
// times: a batch keeps its order and takes an id more than once.
func askInBatch(ctx context.Context, h Harness, req checkback.Request) (checkback.Answer, error) {
	other := checkback.Request{ID: newID(), ProducerGroup: "conformance", Topic: "t", CheckCount: 1}
	as, err := h.Checker.(checkback.BatchChecker).CheckBatch(ctx, []checkback.Request{other, req, other})
	if err != nil {
		return 0, err
	}
	if len(as) != 3 {
		return 0, fmt.Errorf("a batch of 3 checks answered %d answers", len(as))
	}
	if as[0] != checkback.AnswerRollback || as[2] != checkback.AnswerRollback {
		return 0, fmt.Errorf("a message no transaction recorded answered %v and %v in a batch, want rollback", as[0], as[2])
	}
	return as[1], nil
}

func check(t *testing.T, h Harness, asker ask, id string) checkback.Answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := asker(ctx, h, checkback.Request{ID: id, ProducerGroup: "conformance", Topic: "t", CheckCount: 1})
	if err != nil {
		t.Fatalf("check %s: %v", id, err)
	}
	return a
}

// Run runs the suite; newHarness gives each subtest a fresh Harness. Each
// case runs with Check, and again with CheckBatch under Batch/ when the
// Checker is a checkback.BatchChecker (skipped otherwise).
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	run(t, newHarness, askOne)
	t.Run("Batch", func(t *testing.T) {
		if _, ok := newHarness(t).Checker.(checkback.BatchChecker); !ok {
			t.Skip("the Checker is not a checkback.BatchChecker: it answers one check per request")
		}
		run(t, newHarness, askInBatch)
	})
}

func run(t *testing.T, newHarness func(t *testing.T) Harness, asker ask) {
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
			if a := check(t, h, asker, id); a != checkback.AnswerCommit {
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
			if a := check(t, h, asker, id); a != checkback.AnswerRollback {
				t.Fatalf("rolled back transaction: answer %v, want rollback", a)
			}
		}
	})
	t.Run("CheckWinsOverLateTransaction", func(t *testing.T) {
		h := newHarness(t)
		id := newID()
		if a := check(t, h, asker, id); a != checkback.AnswerRollback {
			t.Fatalf("no transaction: answer %v, want rollback", a)
		}
		end, err := h.Begin(context.Background(), id)
		if err == nil {
			if cerr := end(true); cerr == nil {
				t.Fatal("a transaction that began after a rollback answer committed")
			}
		}
		if a := check(t, h, asker, id); a != checkback.AnswerRollback {
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
				a, err := asker(ctx, h, checkback.Request{ID: id, CheckCount: 1})
				if err != nil {
					t.Errorf("check during an open transaction: %v", err)
				}
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
			if a := check(t, h, asker, id); a != want {
				t.Fatalf("check after: answer %v, want %v", a, want)
			}
		})
	}
}
