package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
)

// makeDue makes the prepared messages ids due a check now.
func makeDue(t *testing.T, env *apiEnv, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, err := env.db.DB.ExecContext(context.Background(),
			`UPDATE txmsg_half_messages SET next_check_at = UTC_TIMESTAMP(6) WHERE id = ?`, id); err != nil {
			t.Fatal(err)
		}
	}
}

// claimByID claims the due messages and returns their claims by id.
func claimByID(t *testing.T, store *Store, want int) map[string]Claim {
	t.Helper()
	claims, err := store.ClaimDue(context.Background(), 100, time.Minute)
	if err != nil || len(claims) != want {
		t.Fatalf("claimed %d (%v), want %d", len(claims), err, want)
	}
	out := map[string]Claim{}
	for _, c := range claims {
		out[c.ID] = c
	}
	return out
}

// TestBrokerRecordChecksBatchKeepsEachOutcome: one batch of every kind of
// outcome resolves, discards and reschedules each message as RecordCheck
// would, writes one history row per check, counts each resolution, and
// leaves alone a message a producer resolved while it was checked.
func TestBrokerRecordChecksBatchKeepsEachOutcome(t *testing.T) {
	t.Parallel()
	metrics := &recMetrics{resolved: map[string]int{}}
	env := newAPIEnv(t, WithStoreHooks(metrics))
	ctx := context.Background()
	ids := []string{"commit", "rollback", "discard", "again", "raced"}
	for _, id := range ids {
		prepareOne(t, env.store, halfmsg.PrepareRequest{Message: txmsg.Message{ID: id}, CheckTimeout: time.Hour, MaxChecks: 3})
	}
	makeDue(t, env, ids...)
	claims := claimByID(t, env.store, len(ids))
	// The producer commits "raced" itself while its check is in flight.
	if _, err := env.store.Commit(ctx, "raced"); err != nil {
		t.Fatal(err)
	}
	errs := env.store.RecordChecks(ctx, []CheckRecord{
		{claims["commit"], CheckResult{Answer: checkback.AnswerCommit, Latency: time.Millisecond}},
		{claims["rollback"], CheckResult{Answer: checkback.AnswerRollback}},
		{claims["discard"], CheckResult{Answer: checkback.AnswerUnknown, Err: errors.New("boom"), Discard: true}},
		{claims["again"], CheckResult{Answer: checkback.AnswerUnknown, NextCheck: 30 * time.Second}},
		{claims["raced"], CheckResult{Answer: checkback.AnswerRollback}},
	})
	if errs != nil {
		t.Fatalf("RecordChecks: %v", errs)
	}
	// One statement wrote the history of the batch: one timestamp. Checks
	// recorded one by one (a batch that failed) would have five.
	var stamps int
	if err := env.db.DB.QueryRowContext(ctx, `SELECT COUNT(DISTINCT checked_at) FROM txmsg_half_checks`).Scan(&stamps); err != nil || stamps != 1 {
		t.Fatalf("history written at %d times (%v), want 1: the batch was not written as one", stamps, err)
	}
	for id, want := range map[string]halfmsg.State{
		"commit": halfmsg.StateCommitted, "rollback": halfmsg.StateRolledBack, "discard": halfmsg.StateDiscarded,
		"again": halfmsg.StatePrepared, "raced": halfmsg.StateCommitted,
	} {
		info, err := env.store.Get(ctx, id)
		if err != nil || info.State != want {
			t.Fatalf("%s: %+v (%v), want %v", id, info, err, want)
		}
		checks, err := env.store.Checks(ctx, id)
		if err != nil || len(checks) != 1 || checks[0].No != 1 {
			t.Fatalf("%s: history %+v (%v), want check 1", id, checks, err)
		}
	}
	if info, _ := env.store.Get(ctx, "discard"); info.LastCheckResult != "error" || info.LastCheckError == "" ||
		!strings.Contains(info.Reason, "after 1 check-backs (last: error)") {
		t.Fatalf("discard: %+v", info)
	}
	if info, _ := env.store.Get(ctx, "again"); info.LastCheckResult != "unknown" ||
		time.Until(info.NextCheckAt) < 20*time.Second || time.Until(info.NextCheckAt) > 40*time.Second {
		t.Fatalf("again: next check at %v (in %v), result %q, want in 30s", info.NextCheckAt, time.Until(info.NextCheckAt), info.LastCheckResult)
	}
	if info, _ := env.store.Get(ctx, "raced"); info.LastCheckResult != "" {
		t.Fatalf("raced: the check's answer was stored over the producer's commit: %+v", info)
	}
	for key, want := range map[string]int{"committed/checkback": 1, "rolled_back/checkback": 1, "discarded/checkback": 1} {
		if got := metrics.get(key); got != want {
			t.Errorf("Resolved %s counted %d times, want %d", key, got, want)
		}
	}
}

// TestBrokerRecordChecksFencesEachClaim: a claim whose lease passed and
// whose message was claimed again changes nothing, in the same batch as
// claims that are current, and even beside the newer claim of its own
// message.
func TestBrokerRecordChecksFencesEachClaim(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	for _, id := range []string{"stale", "fresh", "twice"} {
		prepareOne(t, env.store, halfmsg.PrepareRequest{Message: txmsg.Message{ID: id}, CheckTimeout: time.Hour})
	}
	makeDue(t, env, "stale", "twice")
	old := claimByID(t, env.store, 2)
	// Both leases pass; the messages are claimed again, with "fresh".
	makeDue(t, env, "stale", "fresh", "twice")
	cur := claimByID(t, env.store, 3)
	errs := env.store.RecordChecks(ctx, []CheckRecord{
		{old["stale"], CheckResult{Answer: checkback.AnswerCommit}},
		{cur["fresh"], CheckResult{Answer: checkback.AnswerRollback}},
		{old["twice"], CheckResult{Answer: checkback.AnswerRollback}},
		{cur["twice"], CheckResult{Answer: checkback.AnswerCommit}},
	})
	if errs != nil {
		t.Fatalf("RecordChecks: %v", errs)
	}
	for id, want := range map[string]halfmsg.State{
		"stale": halfmsg.StatePrepared, "fresh": halfmsg.StateRolledBack, "twice": halfmsg.StateCommitted,
	} {
		if info, err := env.store.Get(ctx, id); err != nil || info.State != want {
			t.Fatalf("%s: %+v (%v), want %v", id, info, err, want)
		}
	}
	// The stale check of "stale" is in the history, its answer is not.
	if info, _ := env.store.Get(ctx, "stale"); info.CheckCount != 2 || info.LastCheckResult != "" {
		t.Fatalf("stale: %+v, want check 2 in flight and no result", info)
	}
}

// TestBrokerRecordChecksOneFailureKeepsTheOthers: a record that cannot be
// stored fails alone; the others of its batch are stored.
func TestBrokerRecordChecksOneFailureKeepsTheOthers(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		prepareOne(t, env.store, halfmsg.PrepareRequest{Message: txmsg.Message{ID: id}, CheckTimeout: time.Hour})
	}
	makeDue(t, env, "a", "b", "c")
	claims := claimByID(t, env.store, 3)
	bad := claims["b"]
	// An id too long for the history table: its row cannot be written.
	bad.ID = strings.Repeat("b", 300)
	errs := env.store.RecordChecks(ctx, []CheckRecord{
		{claims["a"], CheckResult{Answer: checkback.AnswerCommit}},
		{bad, CheckResult{Answer: checkback.AnswerCommit}},
		{claims["c"], CheckResult{Answer: checkback.AnswerRollback}},
	})
	if len(errs) != 3 || errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("RecordChecks: %v, want an error for the second record only", errs)
	}
	for id, want := range map[string]halfmsg.State{"a": halfmsg.StateCommitted, "b": halfmsg.StatePrepared, "c": halfmsg.StateRolledBack} {
		if info, err := env.store.Get(ctx, id); err != nil || info.State != want {
			t.Fatalf("%s: %+v (%v), want %v", id, info, err, want)
		}
	}
}

// A message committed by check-back in a batch records what it waits for,
// as one committed alone does.
func TestBrokerHalfSourcePrepareOrderBatchedCheck(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	ctx := context.Background()
	e.prepare("b1", "t", "k")
	e.prepare("b2", "t", "k")
	e.prepare("b3", "t", "k")
	e.prepare("x", "t", "other")
	e.commit("b3") // waits for b2
	makeDue(t, e.apiEnv, "b2", "x")
	claims := claimByID(t, e.store, 2)
	if errs := e.store.RecordChecks(ctx, []CheckRecord{
		{claims["b2"], CheckResult{Answer: checkback.AnswerCommit}},
		{claims["x"], CheckResult{Answer: checkback.AnswerRollback}},
	}); errs != nil {
		t.Fatal(errs)
	}
	if got := e.drain(10); got != "" {
		t.Fatalf("delivered %q while b1 is prepared", got)
	}
	e.commit("b1")
	if got := e.drain(10); got != "b1 b2 b3" {
		t.Fatalf("delivered %q, want b1 b2 b3", got)
	}
}

// TestBrokerRecordCheckTwiceKeepsOneHistoryRow: a check recorded again (a
// batch whose COMMIT's outcome was unknown, retried one by one) leaves one
// history row and the outcome of the first.
func TestBrokerRecordCheckTwiceKeepsOneHistoryRow(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	prepareOne(t, env.store, halfmsg.PrepareRequest{Message: txmsg.Message{ID: "twice"}, CheckTimeout: time.Hour, MaxChecks: 3})
	makeDue(t, env, "twice")
	c := claimByID(t, env.store, 1)["twice"]
	for range 2 {
		if err := env.store.RecordCheck(ctx, c, CheckResult{Answer: checkback.AnswerCommit}); err != nil {
			t.Fatal(err)
		}
	}
	var rows int
	if err := env.db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM txmsg_half_checks WHERE msg_id = 'twice'`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("history has %d rows of the check (%v), want 1", rows, err)
	}
	if info, err := env.store.Get(ctx, "twice"); err != nil || info.State != halfmsg.StateCommitted {
		t.Fatalf("state %v (%v), want committed", info.State, err)
	}
}
