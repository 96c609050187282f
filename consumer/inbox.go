package consumer

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"github.com/txmsg/txmsg/internal/sqlx"
	"github.com/txmsg/txmsg/internal/sqlx/mysqlx"
)

// inboxTable is the inbox table, created by migration 0003.
const inboxTable = "txmsg_inbox"

// Inbox SQL.
const (
	insertInbox = `INSERT INTO ` + inboxTable + ` (consumer_group, msg_id, topic, kafka_partition, kafka_offset, processed_at) VALUES (?, ?, ?, ?, ?, ?)`
	purgeInbox  = `DELETE FROM ` + inboxTable + ` WHERE consumer_group = ? AND processed_at < ? ORDER BY processed_at LIMIT ?`
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
		if mysqlx.IsDuplicate(err) {
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
// deleted. Run calls it every purge interval (WithInboxRetention).
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

// purgeLoop purges the inbox every purge interval until shutdown begins,
// which cancels a purge under way.
func (r *run) purgeLoop() {
	t := time.NewTicker(r.c.o.purgeEvery)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		n, err := r.c.PurgeInbox(r.ctx)
		switch {
		case err != nil && r.ctx.Err() == nil:
			r.log.Warn("consumer: inbox purge", slog.Any("error", err))
		case n > 0:
			r.log.Info("consumer: inbox purged", slog.Int64("rows", n))
		}
	}
}
