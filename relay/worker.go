package relay

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/txmsg/txmsg/internal/backoff"
	"github.com/txmsg/txmsg/internal/sqlx"
)

// readCommitted is the isolation of every write the engine makes to a
// source: under REPEATABLE READ a DELETE by primary key can hold next-key
// (gap) locks that block, and deadlock with, producers inserting into the
// same shard. READ COMMITTED takes no gap locks.
func readCommitted() *sql.TxOptions { return &sql.TxOptions{Isolation: sql.LevelReadCommitted} }

// readPending is how pending rows are read: at REPEATABLE READ whatever the
// server's or the DSN's default, since under READ UNCOMMITTED the relay would
// publish rows of transactions that later roll back, and a source that reads
// in several statements (the half source, when messages wait for earlier
// ones of their key) needs them all to see one snapshot; read-only, so the
// consistent reads take no locks.
func readPending() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
}

// work drains one shard until soft ends: poll, publish, mark, repeat.
// Rounds run on hard, so a batch under way at shutdown can still be marked.
func (e *Engine) work(soft, hard context.Context, w *shardWorker) {
	retry := e.retryPolicy()
	wake := e.wakes[w.src.Name()][w.shard]
	idle := e.cfg.PollMin
	failures := 0
	_, watched := w.src.(Changes)
	// A Busy source's shards are woken by watchBusy: idle, they poll on
	// their own only as a safety net.
	idleMax := e.cfg.PollMax
	if _, listed := w.src.(Busy); listed && !watched {
		idleMax = max(e.busyFallback, e.cfg.PollMax)
	}
	defer e.setFront(w, noFront)
	for soft.Err() == nil {
		if int64(e.since()) > w.deadline.Load() {
			// The lease may have lapsed: publish nothing until it is
			// renewed, and hold no other shard back meanwhile.
			e.setFront(w, noFront)
			sleep(soft, nil, e.cfg.Heartbeat/4)
			continue
		}
		if e.ahead(w) {
			sleep(soft, nil, max(e.cfg.PollMin, time.Millisecond))
			continue
		}
		// The round may not outlive the lease as the worker knows it: a
		// write still under way when another relay may own the shard would
		// reorder its keys. An interrupted round is simply retried.
		deadline := e.epoch.Add(time.Duration(w.deadline.Load()))
		rctx, cancel := context.WithDeadline(hard, deadline)
		// Settling (marking, charging) may run a little past the round's
		// deadline, which is a heartbeat before the lease expires: what Kafka
		// acknowledged is better marked than sent twice.
		sctx, scancel := context.WithDeadline(hard, deadline.Add(e.cfg.Heartbeat/2))
		res, err := e.round(rctx, sctx, w)
		scancel()
		cancel()
		if err == nil && res.full && res.done == res.read {
			e.setFront(w, res.next)
		} else {
			e.setFront(w, noFront)
		}
		var wait time.Duration
		switch {
		case errors.Is(err, errLeaseLost):
			// Another relay owns the shard: publish nothing more; the next
			// renewal sees the version changed and stops this worker.
			w.deadline.Store(0)
			e.log.Warn("relay lost shard lease", slog.String("source", w.src.Name()), slog.Int("shard", w.shard),
				slog.Any("error", err))
			continue
		case err != nil:
			failures++
			// A backoff is not cut short by new rows: it protects a
			// struggling Kafka or database.
			sleep(soft, nil, retry.Delay(failures))
			e.log.Warn("relay round failed", slog.String("source", w.src.Name()), slog.Int("shard", w.shard),
				slog.Int("attempt", failures), slog.Any("error", err))
			continue
		case res.held > 0 && res.done == 0 && res.full:
			// Every row within reach waits for a backoff, and new rows lie
			// beyond the batch: nothing can go before the first one ends.
			failures, idle = 0, e.cfg.PollMin
			sleep(soft, nil, max(res.retryIn, e.cfg.PollMin))
			continue
		case res.held > 0:
			// Rows wait for a backoff: look again when the first one ends,
			// or on new rows, but at least PollMin and at most PollMax
			// apart, since each look reads the waiting rows again.
			failures, idle = 0, e.cfg.PollMin
			wait = min(max(res.retryIn, e.cfg.PollMin), e.cfg.PollMax)
		case res.full && res.done == res.read:
			failures, idle = 0, e.cfg.PollMin
			continue
		case watched:
			// The change probe wakes the worker when rows of its shard
			// arrive, late commits included: polling again at once would
			// cost a statement per shard for nothing.
			failures, idle = 0, e.cfg.PollMin
			wait = e.cfg.PollMax
		case res.done > 0:
			failures, idle = 0, e.cfg.PollMin
			wait = e.cfg.PollMin
		default:
			failures = 0
			wait = idle
			idle = min(2*idle, idleMax)
		}
		sleep(soft, wake, wait)
	}
}

// retryPolicy is the backoff between failed rounds, and between attempts at
// what Kafka failed on.
func (e *Engine) retryPolicy() backoff.Policy {
	return backoff.Policy{Initial: e.cfg.RetryInitial, Max: e.cfg.RetryMax, Factor: 2}
}

// sleep waits d, or less if ctx ends or wake fires.
func sleep(ctx context.Context, wake <-chan struct{}, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-wake:
	case <-t.C:
	}
}

// roundResult is what a round did with the rows it read.
type roundResult struct {
	// read counts the pending rows read.
	read int
	// done counts rows delivered or dead-lettered.
	done int
	// held counts rows left pending for a later round: behind a backoff, a
	// failure, or an earlier row of their key.
	held int
	// retryIn is when the first backoff ends (0 when none is running).
	retryIn time.Duration
	// firstPending is the lowest seq read that stays pending (0: none).
	firstPending int64
	// full is set when the read stopped at the batch's rows or bytes: more
	// rows may wait right behind, from seq next on.
	full bool
	next int64
}

// round publishes the oldest pending rows of w's shard. Rows are sent in seq
// order per partition; what Kafka cannot take now stays pending (or is
// charged an attempt), and so do the later rows of its key, while the other
// keys go on. Reading and producing end by ctx; recording the outcome runs on
// settleCtx.
func (e *Engine) round(ctx, settleCtx context.Context, w *shardWorker) (roundResult, error) {
	src := w.src
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		return roundResult{}, ctx.Err()
	}
	defer func() { <-e.slots }()
	// Loaded before the take: every probe up to it has put its rows.
	done := e.probesDone.Load()
	hs, overflow := e.inboxes[src.Name()][w.shard].take()
	handed, ok := e.handed(w, hs, overflow)
	w.polled.forget(done)
	// Set again once the round delivered all it took.
	w.synced = false
	if ok {
		if len(handed) == 0 {
			// What was handed, a read had; or nothing was, and the
			// last read is recent (see handed).
			w.synced = true
			return roundResult{}, nil
		}
		e.saw(src.Name(), handed[len(handed)-1].Seq)
		res, err := e.publish(ctx, settleCtx, w, handed)
		w.synced = err == nil && res.done == res.read && res.held == 0
		return res, err
	}
	// Read before the poll: the rows below it were final when it began.
	settled := e.settled[src.Name()].Load()
	from := e.from(w)
	limit := Limit{Rows: e.cfg.BatchSize, Bytes: e.cfg.BatchBytes}
	inFlight := w.marking.inFlight()
	polledAt := e.since()
	read, err := e.poll(ctx, src, w.shard, from, limit)
	if err != nil {
		e.metrics.Error(src.Name(), "poll")
		return roundResult{}, fmt.Errorf("relay: poll shard %d of %s: %w", w.shard, src.Name(), err)
	}
	if len(read) == 0 {
		e.advance(w, settled, nil, false, 0)
		w.synced, w.polledAt = true, polledAt
		return roundResult{}, nil
	}
	w.polled.read(read, e.probesSent.Load())
	last := read[len(read)-1].Seq
	e.saw(src.Name(), last)
	var size int64
	for _, r := range read {
		size += int64(len(r.Key) + len(r.Value))
	}
	full := len(read) >= limit.Rows || size >= limit.Bytes
	rows := skip(read, inFlight)
	if len(rows) == 0 {
		// Everything read is being marked. More may wait behind a full
		// read: once the marks are done, those rows are gone (or read
		// again after a failed mark) and the next read gets past them.
		if full {
			w.marking.wg.Wait()
		}
		e.advance(w, settled, read, full, 0)
		w.synced, w.polledAt = !full, polledAt
		return roundResult{full: full, next: last + 1}, nil
	}
	res, err := e.publish(ctx, settleCtx, w, rows)
	if err != nil {
		return res, err
	}
	res.full = full
	res.next = last + 1
	e.advance(w, settled, read, full, res.firstPending)
	w.synced, w.polledAt = !full && res.done == res.read && res.held == 0, polledAt
	return res, nil
}

// publish sends rows, which are pending and in seq order, and records what
// Kafka answered.
func (e *Engine) publish(ctx, settleCtx context.Context, w *shardWorker, rows []Row) (roundResult, error) {
	p, err := e.plan(ctx, w, rows)
	if err != nil {
		return roundResult{}, fmt.Errorf("relay: publish shard %d of %s: %w", w.shard, w.src.Name(), err)
	}
	e.send(ctx, w, p)
	return e.settle(settleCtx, w, p)
}

// poll reads the pending rows of shard from seq from on (0: from its start).
func (e *Engine) poll(ctx context.Context, src Source, shard int, from int64, limit Limit) ([]Row, error) {
	read := func(q Querier) ([]Row, error) {
		if sk, ok := src.(Seeker); ok && from > 0 {
			return sk.PendingFrom(ctx, q, shard, from, limit)
		}
		return src.Pending(ctx, q, shard, limit)
	}
	sr, single := src.(SingleRead)
	cr, own := src.(ConsistentRead)
	alone := (single && sr.SingleRead()) || (own && cr.ConsistentRead())
	var rows []Row
	err := e.consistently(ctx, alone && !e.pollInTx, func(q Querier) error {
		var err error
		rows, err = read(q)
		return err
	})
	return rows, err
}

// consistently runs read on the pool when alone is set (a single statement
// at an isolation that reads committed rows), or else in a transaction of
// its own (see readPending).
func (e *Engine) consistently(ctx context.Context, alone bool, read func(q Querier) error) error {
	if alone {
		return read(e.db)
	}
	return sqlx.RunInTx(ctx, e.db, readPending(), func(tx *sql.Tx) error { return read(tx) })
}

// settle updates the worker's backoffs from what Kafka answered, then marks
// what it acknowledged and charges what it refused.
func (e *Engine) settle(ctx context.Context, w *shardWorker, p *plan) (roundResult, error) {
	now := e.since()
	res := roundResult{read: p.read, held: p.held}
	var delivered []Row
	refused := p.refused
	for _, b := range p.batches {
		delivered = append(delivered, b.delivered...)
		refused = append(refused, b.refused...)
		res.held += b.held
		ph := partitionHold(b.topic, b.partition)
		switch {
		case b.topicRefused:
			p.refusedTopics[b.topic] = true
		case b.failed != nil:
			e.logBatchFailure(w, b, w.holds.fail(ph, now))
		default:
			w.holds.clear(ph)
			w.holds.clear(topicHold(b.topic))
		}
	}
	for t := range p.refusedTopics {
		w.holds.refuseTopic(t, now)
	}
	for t := range p.waitTopics {
		w.holds.fail(topicHold(t), now)
	}
	if len(delivered) > 0 {
		if err := e.delivered(ctx, w, delivered); err != nil {
			return roundResult{}, err
		}
		res.done += len(delivered)
	}
	slices.SortFunc(refused, func(a, b refusal) int { return cmp.Compare(a.row.Seq, b.row.Seq) })
	dead, err := e.charge(ctx, w, refused)
	if err != nil {
		return roundResult{}, err
	}
	res.done += len(dead)
	res.held += len(refused) - len(dead)
	for _, f := range refused {
		if p.refusedTopics[f.row.Topic] {
			continue
		}
		if kh := rowKeyHold(&f.row); dead[f.row.Seq] {
			// Dead-lettered: the next row of its key may go at once.
			w.holds.clear(kh)
		} else {
			w.holds.fail(kh, now)
		}
	}
	res.retryIn = w.holds.next(now)
	done := make(map[int64]bool, len(delivered)+len(dead))
	for _, r := range delivered {
		done[r.Seq] = true
	}
	for seq := range dead {
		done[seq] = true
	}
	for _, r := range p.rows {
		if !done[r.Seq] {
			res.firstPending = r.Seq
			break
		}
	}
	return res, nil
}

// delivered hands rows Kafka acknowledged to the marker and returns without
// waiting for the mark (see marking). If marking fails the rows stay
// pending and are published again: a duplicate, never a loss.
func (e *Engine) delivered(ctx context.Context, w *shardWorker, rows []Row) error {
	src := w.src
	// A round's worth of rows per worker may wait for the marker: memory
	// stays bounded, and a round waits only when marking falls that far
	// behind. Waiting for each mark before the next (one in flight) paced a
	// busy shard's rounds by the marker's commits: past saturation, rounds
	// took 40–70 ms, nearly all of it waiting.
	if err := w.marking.room(ctx, len(rows), e.cfg.BatchSize); err != nil {
		e.metrics.Error(src.Name(), "mark")
		return fmt.Errorf("relay: mark %d rows of %s delivered: %w", len(rows), src.Name(), err)
	}
	done, err := e.marker.submit(ctx, src, rows)
	if err != nil {
		e.metrics.Error(src.Name(), "mark")
		return fmt.Errorf("relay: mark %d rows of %s delivered: %w", len(rows), src.Name(), err)
	}
	w.marking.add(rows)
	go func() {
		err := <-done
		// Counted before the worker hears of it: a worker waits for its
		// marks before it exits, and Run for its workers.
		defer w.marking.done(rows, err)
		if err != nil {
			e.metrics.Error(src.Name(), "mark")
			e.log.Warn("relay mark failed; the rows will be published again", slog.String("source", src.Name()),
				slog.Int("shard", w.shard), slog.Int("messages", len(rows)), slog.Any("error", err))
			return
		}
		byTopic := map[string]int{}
		for _, r := range rows {
			byTopic[r.Topic]++
		}
		for t, n := range byTopic {
			e.metrics.Published(src.Name(), t, n)
		}
	}()
	return nil
}

// charge records one more attempt on each refused row, and moves to the dead
// letters those that have used Config.MaxAttempts and those that can never
// be sent. It returns the seqs it dead-lettered. Both are fenced by w's
// lease: a worker that lost it changes nothing.
func (e *Engine) charge(ctx context.Context, w *shardWorker, refused []refusal) (map[int64]bool, error) {
	src := w.src
	var reasons []string
	again := map[string][]Row{}
	var dead []dying
	for _, f := range refused {
		r := f.row
		if f.final || r.Attempts+1 >= e.cfg.MaxAttempts {
			r.Attempts++
			dead = append(dead, dying{row: r, reason: f.err.Error()})
			continue
		}
		reason := f.err.Error()
		if _, ok := again[reason]; !ok {
			reasons = append(reasons, reason)
		}
		again[reason] = append(again[reason], r)
	}
	if len(again) > 0 {
		if err := sqlx.RunInTx(ctx, e.db, readCommitted(), func(tx *sql.Tx) error {
			for _, reason := range reasons {
				if err := src.Failed(ctx, tx, again[reason], reason); err != nil {
					return err
				}
			}
			return e.fence(ctx, tx, w)
		}); err != nil {
			e.metrics.Error(src.Name(), "mark")
			return nil, fmt.Errorf("relay: record %d refused messages of %s: %w", len(refused)-len(dead), src.Name(), err)
		}
		for _, reason := range reasons {
			rs := again[reason]
			e.log.Warn("relay messages refused", slog.String("source", src.Name()), slog.String("topic", rs[0].Topic),
				slog.String("msg_id", rs[0].ID), slog.Int("messages", len(rs)), slog.Int("attempt", rs[0].Attempts+1),
				slog.String("error", reason))
		}
	}
	out := make(map[int64]bool, len(dead))
	if len(dead) == 0 {
		return out, nil
	}
	if err := moveToDead(ctx, e.db, src, dead, func(tx *sql.Tx) error { return e.fence(ctx, tx, w) }); err != nil {
		e.metrics.Error(src.Name(), "dead_letter")
		return nil, err
	}
	for _, d := range dead {
		out[d.row.Seq] = true
		e.metrics.DeadLettered(src.Name(), d.row.Topic, 1)
		e.log.Error("relay message dead-lettered", slog.String("source", src.Name()), slog.String("msg_id", d.row.ID),
			slog.String("topic", d.row.Topic), slog.Int("attempt", d.row.Attempts), slog.String("error", d.reason))
	}
	return out, nil
}

// errLeaseLost is why a worker's write was refused: another engine claimed
// its shard since the worker's lease was last renewed.
var errLeaseLost = errors.New("the shard's lease was claimed by another relay")

// fence holds w's lease row in tx (a shared lock until tx ends) and fails
// with errLeaseLost unless w still owns it. A claim must then wait for tx to
// end, so what tx changes lands before the next owner reads the shard: the
// round's deadline alone cannot stop a COMMIT already sent from landing
// after the lease ran out. Marking delivered rows needs no fence (they are
// in Kafka, whoever deletes them); charging an attempt and dead-lettering
// do. It is the last statement before COMMIT, so that the lease row is held
// only for the commit, never while the transaction waits on other locks
// (a renewal of every shard would wait behind it).
func (e *Engine) fence(ctx context.Context, tx *sql.Tx, w *shardWorker) error {
	var one int
	err := tx.QueryRowContext(ctx, holdLease, w.src.Name(), w.shard, e.cfg.Owner, w.version).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("relay: shard %d of %s (lease version %d): %w", w.shard, w.src.Name(), w.version, errLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("relay: check the lease of shard %d of %s: %w", w.shard, w.src.Name(), err)
	}
	return nil
}
