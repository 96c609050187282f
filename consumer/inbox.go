package consumer

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/robfig/cron/v3"

	"github.com/txmsg/txmsg/internal/sqlx"
)

// Inbox SQL; %s is the validated inbox table name.
const (
	insertInbox = `INSERT INTO %s (consumer_group, msg_id, topic, kafka_partition, kafka_offset, processed_at) VALUES (?, ?, ?, ?, ?, ?)`
	purgeInbox  = `DELETE FROM %s WHERE consumer_group = ? AND processed_at < ? ORDER BY processed_at LIMIT ?`
)

// maxInboxID is the width of the inbox's msg_id column (migration 0003).
const maxInboxID = 320

// inboxID is the key the inbox stores for message id: id itself, or for an
// id longer than the column (a foreign producer's txmsg-id header) "sha256:"
// and the hex of its digest. Such an id is then neither refused on every
// attempt (strict sql_mode) nor cut short, which would make two messages
// sharing their first 320 bytes one.
func inboxID(id string) string {
	if len(id) <= maxInboxID {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// runTx runs h in a transaction that first inserts m's inbox row, keyed by
// (group, topic, id): one id read from several topics (an event fanned out
// under one id) is applied once per topic, and a retried message counts
// under its original topic (m.Topic is restored from the retry headers). A
// duplicate row means an earlier delivery committed its effects: the
// transaction rolls back and dup is true. A concurrent delivery of the same
// message (another member after a rebalance) blocks on the row lock of the
// first insert until that transaction ends, then sees the duplicate or, if
// the first rolled back, goes ahead.
// The insert is prepared once per Run (stmt): database/sql reuses it on
// each pooled connection, sparing the driver's prepare and close round trips.
func (c *Consumer) runTx(ctx context.Context, stmt *sql.Stmt, h TxHandlerFunc, m Message) (dup bool, err error) {
	err = sqlx.RunInTx(ctx, c.o.db, nil, func(tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, c.group, inboxID(m.ID), m.Topic, m.Partition, m.Offset, c.o.now())
		if sqlx.IsDuplicate(err) {
			dup = true
			return errDuplicate
		}
		if err != nil {
			return fmt.Errorf("consumer: insert inbox row %s: %w", m.ID, err)
		}
		return callTx(ctx, h, tx, m)
	})
	if dup {
		return true, nil
	}
	return false, err
}

// callTx calls h, turning a panic into an error so that RunInTx rolls the
// transaction back instead of leaking it.
func callTx(ctx context.Context, h TxHandlerFunc, tx *sql.Tx, m Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("consumer: handler panicked: %v", p)
		}
	}()
	return h(ctx, tx, m)
}

// PurgeInbox deletes this group's inbox rows older than the retention, in
// batches, until none is left or ctx is done; it returns how many it
// deleted. The purge job calls it on its schedule.
func (c *Consumer) PurgeInbox(ctx context.Context) (int64, error) {
	if c.o.db == nil {
		return 0, fmt.Errorf("%w: PurgeInbox needs WithInbox", ErrInvalidConfig)
	}
	cutoff := c.o.now().Add(-c.o.retention)
	var total int64
	for {
		res, err := c.o.db.ExecContext(ctx, c.purgeSQL, c.group, cutoff, c.o.purgeBatch)
		if err != nil {
			return total, fmt.Errorf("consumer: purge inbox of group %s: %w", c.group, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("consumer: purge inbox of group %s: %w", c.group, err)
		}
		total += n
		if n < int64(c.o.purgeBatch) || ctx.Err() != nil {
			return total, nil
		}
	}
}

// startPurge schedules the inbox purge when an inbox and a retention are
// set; the returned func stops it and waits for a running purge.
func (r *run) startPurge() (stop func(), err error) {
	c := r.c
	if c.o.db == nil || c.o.retention == 0 {
		return func() {}, nil
	}
	logger := cronLogger{r.log}
	cr := cron.New(cron.WithChain(cron.Recover(logger), cron.SkipIfStillRunning(logger)), cron.WithLogger(logger))
	ctx, cancel := context.WithCancel(r.hctx)
	_, err = cr.AddFunc(c.o.purgeSchedule, func() {
		n, err := c.PurgeInbox(ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			r.log.Warn("consumer: inbox purge", slog.Any("error", err))
			return
		}
		if n > 0 {
			r.log.Info("consumer: inbox purged", slog.Int64("rows", n))
		}
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: inbox purge schedule %q: %w", ErrInvalidConfig, c.o.purgeSchedule, err)
	}
	cr.Start()
	return func() {
		done := cr.Stop()
		cancel()
		<-done.Done()
	}, nil
}

// cronLogger adapts slog to cron.Logger.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) {
	c.l.Debug("consumer: cron "+msg, kv...)
}

func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("consumer: cron "+msg, append(kv, slog.Any("error", err))...)
}
