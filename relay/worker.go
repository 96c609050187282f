package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/backoff"
	"github.com/txmsg/txmsg/internal/sqlx"
)

// readCommitted is the isolation of every write the engine makes to a
// source: under REPEATABLE READ a DELETE by primary key can hold next-key
// (gap) locks that block, and deadlock with, producers inserting into the
// same shard. READ COMMITTED takes no gap locks.
func readCommitted() *sql.TxOptions { return &sql.TxOptions{Isolation: sql.LevelReadCommitted} }

// errRetryLater marks a round that recorded a refused attempt: back off, then
// try the same rows again.
var errRetryLater = errors.New("relay: message refused, will retry")

// work drains one shard until soft ends: poll, publish, mark, repeat.
// Rounds run on hard, so a batch under way at shutdown can still be marked.
func (e *Engine) work(soft, hard context.Context, w *shardWorker) {
	retry := backoff.Policy{Initial: e.cfg.RetryInitial, Max: e.cfg.RetryMax, Factor: 2}
	wake := e.wakes[w.src.Name()][w.shard]
	idle := e.cfg.PollMin
	failures := 0
	for soft.Err() == nil {
		if int64(e.since()) > w.deadline.Load() {
			// The lease may have lapsed: publish nothing until it is renewed.
			sleep(soft, nil, e.cfg.Heartbeat/4)
			continue
		}
		// The round may not outlive the lease as the worker knows it: a
		// write still under way when another relay may own the shard would
		// reorder its keys. An interrupted round is simply retried.
		rctx, cancel := context.WithDeadline(hard, e.epoch.Add(time.Duration(w.deadline.Load())))
		n, err := e.round(rctx, w)
		cancel()
		var wait time.Duration
		switch {
		case err != nil:
			failures++
			// A backoff is not cut short by new rows: it protects a
			// struggling Kafka or database.
			sleep(soft, nil, retry.Delay(failures))
			if !errors.Is(err, errRetryLater) {
				e.log.Warn("relay round failed", slog.String("source", w.src.Name()), slog.Int("shard", w.shard),
					slog.Int("attempt", failures), slog.Any("error", err))
			}
			continue
		case n == e.cfg.BatchSize:
			failures, idle = 0, e.cfg.PollMin
			continue
		case n > 0:
			failures, idle = 0, e.cfg.PollMin
			wait = e.cfg.PollMin
		default:
			failures = 0
			wait = idle
			idle = min(2*idle, e.cfg.PollMax)
		}
		sleep(soft, wake, wait)
	}
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

// round publishes the oldest pending rows of w's shard and returns how many
// rows it took care of (delivered or dead-lettered). Rows are sent in seq
// order; the first row Kafka cannot take at all stops the round there, so a
// refused message never lets a later one of its key overtake it.
func (e *Engine) round(ctx context.Context, w *shardWorker) (int, error) {
	src := w.src
	var kw *kafka.Writer
	select {
	case kw = <-e.writers:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { e.writers <- kw }()
	rows, err := src.Pending(ctx, e.db, w.shard, Limit{Rows: e.cfg.BatchSize, Bytes: e.cfg.BatchBytes})
	if err != nil {
		e.metrics.Error(src.Name(), "poll")
		return 0, fmt.Errorf("relay: poll shard %d of %s: %w", w.shard, src.Name(), err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	head := rows
	var poison *Row
	var poisonErr error
	for i := range rows {
		if err := e.sendable(&rows[i]); err != nil {
			head, poison, poisonErr = rows[:i], &rows[i], err
			break
		}
	}
	done, err := e.publish(ctx, kw, src, head)
	if err != nil {
		return done, err
	}
	if poison == nil {
		return done, nil
	}
	if err := e.refused(ctx, src, *poison, poisonErr); err != nil {
		return done, err
	}
	return done + 1, nil
}

// sendable rejects, before any network call, a row kafka-go would refuse for
// the whole batch.
func (e *Engine) sendable(r *Row) error {
	if err := txmsg.ValidateTopic(r.Topic); err != nil {
		return err
	}
	size := int64(len(r.Key) + len(r.Value) + 64 + len(txmsg.HeaderID) + len(r.ID) + len(txmsg.HeaderSource) + 8)
	for _, h := range r.Headers {
		size += int64(len(h.Key) + len(h.Value) + 8)
	}
	if size > e.maxMessage {
		return kafka.MessageTooLargeError{}
	}
	return nil
}

// publish writes rows to Kafka and marks what Kafka acknowledged. When Kafka
// refuses some for good, it retries those one by one in seq order to find the
// culprit, so only it is charged an attempt.
func (e *Engine) publish(ctx context.Context, kw *kafka.Writer, src Source, rows []Row) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	ok, failed, err := e.write(ctx, kw, src, rows)
	done := len(ok)
	if len(ok) > 0 {
		if merr := e.delivered(ctx, src, ok); merr != nil {
			return 0, merr
		}
	}
	if err == nil {
		return done, nil
	}
	if !isPermanent(err) {
		e.metrics.Error(src.Name(), "publish")
		return done, fmt.Errorf("relay: publish batch of %d from %s: %w", len(rows), src.Name(), err)
	}
	for _, r := range failed {
		ok, _, err := e.write(ctx, kw, src, []Row{r})
		switch {
		case err == nil:
			if merr := e.delivered(ctx, src, ok); merr != nil {
				return done, merr
			}
		case isPermanent(err):
			if rerr := e.refused(ctx, src, r, err); rerr != nil {
				return done, rerr
			}
		default:
			e.metrics.Error(src.Name(), "publish")
			return done, fmt.Errorf("relay: publish message %s to topic %s: %w", r.ID, r.Topic, err)
		}
		done++
	}
	return done, nil
}

// write sends rows in one WriteMessages call and splits them into those Kafka
// acknowledged and those it did not.
func (e *Engine) write(ctx context.Context, kw *kafka.Writer, src Source, rows []Row) (ok, failed []Row, err error) {
	msgs := make([]kafka.Message, len(rows))
	for i, r := range rows {
		hs := make([]kafka.Header, 0, len(r.Headers)+2)
		for _, h := range r.Headers {
			hs = append(hs, kafka.Header{Key: h.Key, Value: h.Value})
		}
		hs = append(hs,
			kafka.Header{Key: txmsg.HeaderID, Value: []byte(r.ID)},
			kafka.Header{Key: txmsg.HeaderSource, Value: []byte(src.Name())})
		msgs[i] = kafka.Message{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: hs}
	}
	start := time.Now()
	err = kw.WriteMessages(ctx, msgs...)
	e.metrics.PublishLatency(src.Name(), time.Since(start))
	if err == nil {
		return rows, nil, nil
	}
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) || len(werrs) != len(rows) {
		return nil, rows, err
	}
	var first error
	for i, werr := range werrs {
		if werr == nil {
			ok = append(ok, rows[i])
			continue
		}
		failed = append(failed, rows[i])
		if first == nil || isPermanent(werr) && !isPermanent(first) {
			first = werr
		}
	}
	return ok, failed, first
}

// delivered marks rows Kafka acknowledged. If marking fails the rows stay
// pending and are published again: a duplicate, never a loss.
func (e *Engine) delivered(ctx context.Context, src Source, rows []Row) error {
	if err := sqlx.RunInTx(ctx, e.db, readCommitted(), func(tx *sql.Tx) error {
		return src.Delivered(ctx, tx, rows)
	}); err != nil {
		e.metrics.Error(src.Name(), "mark")
		return fmt.Errorf("relay: mark %d rows of %s delivered: %w", len(rows), src.Name(), err)
	}
	byTopic := map[string]int{}
	for _, r := range rows {
		byTopic[r.Topic]++
	}
	for t, n := range byTopic {
		e.metrics.Published(src.Name(), t, n)
	}
	return nil
}

// refused charges r one attempt for a permanent refusal, and dead-letters it
// once it has used Config.MaxAttempts. It returns errRetryLater while r still
// has attempts left, nil once it is dead-lettered.
func (e *Engine) refused(ctx context.Context, src Source, r Row, cause error) error {
	reason := cause.Error()
	if r.Attempts+1 < e.cfg.MaxAttempts {
		if err := sqlx.RunInTx(ctx, e.db, readCommitted(), func(tx *sql.Tx) error {
			return src.Failed(ctx, tx, []Row{r}, reason)
		}); err != nil {
			e.metrics.Error(src.Name(), "mark")
			return fmt.Errorf("relay: record failure of %s: %w", r.ID, err)
		}
		e.log.Warn("relay message refused", slog.String("msg_id", r.ID), slog.String("topic", r.Topic),
			slog.Int("attempt", r.Attempts+1), slog.String("error", reason))
		return errRetryLater
	}
	r.Attempts++
	if err := moveToDead(ctx, e.db, src, r, reason); err != nil {
		e.metrics.Error(src.Name(), "dead_letter")
		return err
	}
	e.metrics.DeadLettered(src.Name(), r.Topic, 1)
	e.log.Error("relay message dead-lettered", slog.String("msg_id", r.ID), slog.String("topic", r.Topic),
		slog.Int("attempt", r.Attempts), slog.String("error", reason))
	return nil
}

// isPermanent says whether Kafka refused a message for good: retrying the
// same bytes cannot succeed (too large, invalid topic or record).
func isPermanent(err error) bool {
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		return true
	}
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) {
		for _, w := range werrs {
			if w != nil && isPermanent(w) {
				return true
			}
		}
		return false
	}
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		switch kerr {
		// Not here: CORRUPT_MESSAGE, which Kafka retries, and authorization
		// errors, an operator's mistake: the shard waits, in order, until
		// it is fixed, and errors_total{kind="publish"} says so.
		case kafka.MessageSizeTooLarge, kafka.InvalidTopic, kafka.RecordListTooLarge, kafka.InvalidRecord,
			kafka.UnsupportedForMessageFormat:
			return true
		}
	}
	return errors.Is(err, txmsg.ErrInvalidMessage)
}
