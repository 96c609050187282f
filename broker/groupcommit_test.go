package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

// testCall is a batched call that records nothing of its own.
type testCall struct {
	call
	n int
}

func TestBrokerBatcherRunsWhatQueuedMeanwhileAsOneBatch(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var (
		mu      sync.Mutex
		batches [][]int
	)
	b := &batcher[*testCall]{max: 100, writers: 1, run: func(_ context.Context, calls []*testCall) []error {
		var ns []int
		for _, c := range calls {
			ns = append(ns, c.n)
		}
		mu.Lock()
		batches = append(batches, ns)
		first := len(batches) == 1
		mu.Unlock()
		if first {
			<-release
		}
		errs := make([]error, len(calls))
		errs[len(calls)-1] = fmt.Errorf("call %d failed", calls[len(calls)-1].n)
		return errs
	}}
	ctx := context.Background()
	results := make(chan error, 6)
	go func() { results <- b.do(ctx, &testCall{n: 0}) }()
	testenv.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(batches) != 1 {
			return errors.New("first batch not running")
		}
		return nil
	})
	for i := 1; i <= 5; i++ {
		go func() { results <- b.do(ctx, &testCall{n: i}) }()
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.queue) != 5 {
			return fmt.Errorf("%d calls queued", len(b.queue))
		}
		return nil
	})
	close(release)
	failed := 0
	for range 6 {
		if <-results != nil {
			failed++
		}
	}
	b.wg.Wait()
	if len(batches) != 2 || len(batches[0]) != 1 || len(batches[1]) != 5 || failed != 2 {
		t.Fatalf("batches %v, %d failed: want [[0] [five calls]] with the last call of each failed", batches, failed)
	}
}

func TestBrokerBatcherDropsACallWhoseContextEndsWhileQueued(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	ran := make(chan int, 2)
	b := &batcher[*testCall]{max: 100, writers: 1, run: func(_ context.Context, calls []*testCall) []error {
		for _, c := range calls {
			ran <- c.n
		}
		<-release
		return make([]error, len(calls))
	}}
	done := make(chan error, 1)
	go func() { done <- b.do(context.Background(), &testCall{n: 1}) }()
	if n := <-ran; n != 1 {
		t.Fatalf("ran call %d", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.do(ctx, &testCall{n: 2}); !errors.Is(err, context.Canceled) {
		t.Fatalf("queued call with an ended context: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b.wg.Wait()
	if len(ran) != 0 {
		t.Fatalf("the dropped call ran: %d", <-ran)
	}
}

// blockPrepares holds the prepare writer in a batch until the returned
// function is called: that batch inserts id "blocker", which an open
// transaction holds.
func blockPrepares(t *testing.T, env *apiEnv, group string) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := env.db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.ExecContext(ctx, insertHalf, "blocker", 0, halfmsg.StatePrepared, group, "t", "", "v", nil, nil, 1000, 1, 1000); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := env.store.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: group, Message: txmsg.Message{ID: "blocker", Topic: "t", Value: []byte("v")}})
		done <- err
	}()
	waitBlocked(t, env.db, &env.store.prepares)
	return func() {
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("blocker: %v", err)
		}
	}
}

// waitBlocked waits until b's one writer is in a batch whose write to the
// half messages runs in d (the test holds the row it needs), and no call is
// queued: the call the test made to block it is in that batch. Neither half
// alone says so: a writer counts as running before it takes its call (and
// after its last batch, until it sees the queue empty), and a call queued
// meanwhile would join the batch. (INNODB_TRX does not list an autocommit
// statement waiting for its first lock.)
func waitBlocked[T interface{ base() *call }](t *testing.T, d *testenv.Database, b *batcher[T]) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		var waiting int
		if err := d.DB.QueryRow(`SELECT COUNT(*) FROM information_schema.PROCESSLIST
WHERE DB = ? AND COMMAND <> 'Sleep' AND (INFO LIKE 'UPDATE txmsg_half_messages%' OR INFO LIKE 'INSERT INTO txmsg_half_messages%')`,
			d.Name).Scan(&waiting); err != nil {
			return err
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if waiting != 1 || b.running != 1 || len(b.queue) != 0 {
			return fmt.Errorf("%d writes running, %d writers, %d calls queued; want one of each, none queued",
				waiting, b.running, len(b.queue))
		}
		return nil
	})
}

// waitQueued waits until n() under mu reaches want.
func waitQueued(t *testing.T, mu *sync.Mutex, n func() int, want int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if got := n(); got != want {
			return fmt.Errorf("%d, want %d", got, want)
		}
		return nil
	})
}

// testMsg is a message of id in topic t.
func testMsg(id string) txmsg.Message { return txmsg.Message{ID: id, Topic: "t", Value: []byte("v")} }

// preparedOldThenBlocked prepares "old" in group "g", then holds the
// prepare writer on a "blocker" of g (see blockPrepares): calls queue, and
// release lets them go as one batch.
func preparedOldThenBlocked(t *testing.T, env *apiEnv) (release func()) {
	t.Helper()
	if _, err := env.store.Prepare(context.Background(), halfmsg.PrepareRequest{ProducerGroup: "g", Message: testMsg("old")}); err != nil {
		t.Fatal(err)
	}
	return blockPrepares(t, env, "g")
}

func TestBrokerPrepareBatchFailsOnlyItsDuplicatesAndCallsPastTheBound(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	release := preparedOldThenBlocked(t, env)
	type want struct {
		id    string
		limit int
		err   error
	}
	// "g" has "old" prepared (and "blocker" once released): a bound of 4
	// leaves room for two more.
	calls := []want{{"a", 0, nil}, {"a", 0, txmsg.ErrConflict}, {"old", 0, txmsg.ErrConflict}, {"b", 4, nil},
		{"c", 4, nil}, {"d", 4, errTooManyPrepared}, {"e", 0, nil}}
	errs := make([]chan error, len(calls))
	for i, c := range calls {
		errs[i] = make(chan error, 1)
		go func() {
			_, err := env.store.prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g", Message: testMsg(c.id)}, prepareRules{limit: c.limit})
			errs[i] <- err
		}()
		waitQueued(t, &env.store.prepares.mu, func() int { return len(env.store.prepares.queue) }, i+1)
	}
	release()
	for i, c := range calls {
		err := <-errs[i]
		if (c.err == nil && err != nil) || (c.err != nil && !errors.Is(err, c.err)) {
			t.Errorf("call %d (%s): %v, want %v", i, c.id, err, c.err)
		}
	}
	for _, id := range []string{"a", "b", "c", "e"} {
		if info, err := env.store.Get(ctx, id); err != nil || info.State != halfmsg.StatePrepared {
			t.Errorf("%s: %+v, %v", id, info, err)
		}
	}
	if _, err := env.store.Get(ctx, "d"); !errors.Is(err, txmsg.ErrNotFound) {
		t.Errorf("d past the bound: %v", err)
	}
}

// A call under the bound whose id is a duplicate gives its room back: the
// next call of its group in the same batch is not refused for it.
func TestBrokerPrepareBatchDuplicateLeavesItsRoomToOthers(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	release := preparedOldThenBlocked(t, env)
	// "old" and "blocker" prepared: a bound of 4 leaves room for two, which
	// the retried "old" (a conflict) must not take from "c".
	calls := []struct {
		id  string
		err error
	}{{"old", txmsg.ErrConflict}, {"b", nil}, {"c", nil}, {"d", errTooManyPrepared}}
	errs := make([]chan error, len(calls))
	for i, c := range calls {
		errs[i] = make(chan error, 1)
		go func() {
			_, err := env.store.prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g", Message: testMsg(c.id)}, prepareRules{limit: 4})
			errs[i] <- err
		}()
		waitQueued(t, &env.store.prepares.mu, func() int { return len(env.store.prepares.queue) }, i+1)
	}
	release()
	for i, c := range calls {
		if err := <-errs[i]; (c.err == nil && err != nil) || (c.err != nil && !errors.Is(err, c.err)) {
			t.Errorf("call %d (%s): %v, want %v", i, c.id, err, c.err)
		}
	}
}

func TestBrokerTransitionBatchAnswersEachCallAndAuditsEachMoveOnce(t *testing.T) {
	t.Parallel()
	metrics := &recMetrics{resolved: map[string]int{}}
	var (
		mu     sync.Mutex
		shards []int
	)
	env := newAPIEnv(t, WithStoreHooks(metrics), WithOnCommit(func(shard int) {
		mu.Lock()
		defer mu.Unlock()
		shards = append(shards, shard)
	}))
	ctx := context.Background()
	for _, id := range []string{"m0", "m1", "m2", "m3"} {
		group := "g"
		if id == "m3" {
			group = "other"
		}
		if _, err := env.store.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: group,
			Message: txmsg.Message{ID: id, Topic: "t", Value: []byte("v")}}); err != nil {
			t.Fatal(err)
		}
	}
	// Hold m0's row, so that the batch committing it waits while the other
	// calls queue.
	tx := holdRow(t, env.db.DB, "m0")
	g := Actor{Group: "g"}
	type want struct {
		op    func() (halfmsg.State, error)
		state halfmsg.State
		err   error
	}
	calls := []want{
		{func() (halfmsg.State, error) { return env.store.CommitAs(ctx, g, "m0") }, halfmsg.StateCommitted, nil},
		{func() (halfmsg.State, error) { return env.store.CommitAs(ctx, g, "m1") }, halfmsg.StateCommitted, nil},
		{func() (halfmsg.State, error) { return env.store.CommitAs(ctx, g, "m1") }, halfmsg.StateCommitted, nil},
		{func() (halfmsg.State, error) { return env.store.RollbackAs(ctx, g, "m2") }, halfmsg.StateRolledBack, nil},
		{func() (halfmsg.State, error) { return env.store.CommitAs(ctx, g, "m3") }, 0, txmsg.ErrNotFound},
		{func() (halfmsg.State, error) { return env.store.CommitAs(ctx, g, "nope") }, 0, txmsg.ErrNotFound},
	}
	type result struct {
		st  halfmsg.State
		err error
	}
	res := make([]chan result, len(calls))
	for i, c := range calls {
		res[i] = make(chan result, 1)
		go func() {
			st, err := c.op()
			res[i] <- result{st, err}
		}()
		if i == 0 {
			waitBlocked(t, env.db, &env.store.moves)
			continue
		}
		waitQueued(t, &env.store.moves.mu, func() int { return len(env.store.moves.queue) }, i)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	for i, c := range calls {
		r := <-res[i]
		if r.st != c.state || (c.err == nil && r.err != nil) || (c.err != nil && !errors.Is(r.err, c.err)) {
			t.Errorf("call %d: %v, %v; want %v, %v", i, r.st, r.err, c.state, c.err)
		}
	}
	if n := metrics.get("committed/producer"); n != 2 {
		t.Errorf("%d commits counted, want 2 (m0, m1 once)", n)
	}
	if n := metrics.get("rolled_back/producer"); n != 1 {
		t.Errorf("%d rollbacks counted, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(shards) != 2 {
		t.Errorf("relay woken %d times, want 2", len(shards))
	}
	for id, want := range map[string]halfmsg.State{"m0": halfmsg.StateCommitted, "m1": halfmsg.StateCommitted,
		"m2": halfmsg.StateRolledBack, "m3": halfmsg.StatePrepared} {
		if info, err := env.store.Get(ctx, id); err != nil || info.State != want {
			t.Errorf("%s: %v, %v; want %v", id, info.State, err, want)
		}
	}
}

// TestBrokerBatcherDoAllQueuesItsCallsTogether: a batch request's calls go
// into one batch; when its ctx ends while they are queued, they are all
// withdrawn and none runs.
func TestBrokerBatcherDoAllQueuesItsCallsTogether(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var (
		mu      sync.Mutex
		batches [][]int
	)
	b := &batcher[*testCall]{max: 100, writers: 1, run: func(_ context.Context, calls []*testCall) []error {
		var ns []int
		for _, c := range calls {
			ns = append(ns, c.n)
		}
		mu.Lock()
		batches = append(batches, ns)
		first := len(batches) == 1
		mu.Unlock()
		if first {
			<-release
		}
		return make([]error, len(calls))
	}}
	done := make(chan error, 1)
	go func() { done <- b.do(context.Background(), &testCall{n: 0}) }()
	testenv.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(batches) != 1 {
			return errors.New("first batch not running")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	dropped := make(chan []error, 1)
	go func() { dropped <- b.doAll(ctx, []*testCall{{n: 10}, {n: 11}, {n: 12}}) }()
	waitQueued(t, &b.mu, func() int { return len(b.queue) }, 3)
	cancel()
	for i, err := range <-dropped {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("withdrawn call %d: %v, want context.Canceled", i, err)
		}
	}
	kept := make(chan []error, 1)
	go func() { kept <- b.doAll(context.Background(), []*testCall{{n: 1}, {n: 2}, {n: 3}, {n: 4}}) }()
	waitQueued(t, &b.mu, func() int { return len(b.queue) }, 4)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, err := range <-kept {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	b.wg.Wait()
	if fmt.Sprint(batches) != "[[0] [1 2 3 4]]" {
		t.Fatalf("batches %v, want [[0] [1 2 3 4]]: the withdrawn calls never run, the others in one batch", batches)
	}
}

// A caller that stops waiting while its batch runs does not take the
// record of its move with it: the batch counts, audits and wakes the relay
// once it commits.
func TestBrokerTransitionBatchRecordsAMoveWhoseCallerLeft(t *testing.T) {
	t.Parallel()
	metrics := &recMetrics{resolved: map[string]int{}}
	woken := make(chan int, 4)
	env := newAPIEnv(t, WithStoreHooks(metrics), WithOnCommit(func(shard int) { woken <- shard }))
	ctx := context.Background()
	if _, err := env.store.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g",
		Message: txmsg.Message{ID: "left", Topic: "t", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	tx, err := env.db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT seq FROM txmsg_half_messages WHERE id = 'left' FOR UPDATE`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := env.store.CommitAs(cctx, Actor{Group: "g"}, "left")
		done <- err
	}()
	waitBlocked(t, env.db, &env.store.moves)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the caller that left got an answer from a batch still waiting")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("the commit's shard was never woken")
	}
	if info, err := env.store.Get(ctx, "left"); err != nil || info.State != halfmsg.StateCommitted {
		t.Fatalf("left: %v, %v; want committed", info.State, err)
	}
	if n := metrics.get("committed/producer"); n != 1 {
		t.Fatalf("%d commits counted, want 1", n)
	}
}

// A move InnoDB gives up on (here a lock wait timeout of 1 s, while another
// transaction holds the message's row for longer) runs again instead of
// failing its call: under load a prepare's INSERT and a transition's UPDATE
// deadlock now and then, and that is no failure of either call.
func TestBrokerTransitionRunsAgainWhenInnoDBGivesUp(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	cfg, err := mysql.ParseDSN(d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Params = map[string]string{"innodb_lock_wait_timeout": "1"}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := NewStore(db, WithShards(4), WithAddressPolicy(loopback()), WithStoreLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := store.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g",
		Message: txmsg.Message{ID: "m", Topic: "t", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	tx := holdRow(t, d.DB, "m")
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := store.CommitAs(ctx, Actor{Group: "g"}, "m")
		done <- err
	}()
	// The first attempt gives up after 1 s; the lock goes at 1.5 s.
	time.Sleep(1500 * time.Millisecond)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("commit after a lock wait timeout: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("commit still waiting 20s after the lock went")
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("commit took %v: it never waited for the lock", took)
	}
	if info, err := store.Get(ctx, "m"); err != nil || info.State != halfmsg.StateCommitted {
		t.Fatalf("message %+v, %v; want it committed", info, err)
	}
}

// holdRow locks the row of message id in a transaction of its own, rolled
// back when the test ends (or by the caller, to let the lock go).
func holdRow(t *testing.T, db *sql.DB, id string) *sql.Tx {
	t.Helper()
	tx, err := db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	var seq int64
	if err := tx.QueryRow(`SELECT seq FROM txmsg_half_messages WHERE id = ? FOR UPDATE`, id).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return tx
}
