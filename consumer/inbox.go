package consumer

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/txmsg/txmsg/internal/sqlx"
	"github.com/txmsg/txmsg/internal/sqlx/mysqlx"
)

// inboxTable is the inbox table, created by migration 0003.
const inboxTable = "txmsg_inbox"

// Inbox SQL.
const (
	insertInbox = `INSERT INTO ` + inboxTable + ` (consumer_group, msg_id, topic, kafka_partition, kafka_offset, processed_at) VALUES (?, ?, ?, ?, ?, ?)`
	// A purge batch is found by a plain read, then deleted by primary key:
	// a DELETE … ORDER BY processed_at LIMIT, left to choose, walks the
	// primary key over the whole group with locking reads, and even on the
	// purge index it locks the first newer entry and the gap before it,
	// where the consumer's inserts land: either way the consumer waits for
	// the purge. processed_at is checked again, so a row deleted and
	// inserted anew in between (a redelivery) is kept.
	selectPurge = `SELECT topic, msg_id FROM ` + inboxTable + ` FORCE INDEX (txmsg_inbox_purge)
WHERE consumer_group = ? AND processed_at < ? ORDER BY processed_at LIMIT ?`
	// deletePurge is closed by the caller with the (topic, msg_id) pairs.
	deletePurge = `DELETE i FROM ` + inboxTable + ` i FORCE INDEX (PRIMARY)
WHERE i.consumer_group = ? AND i.processed_at < ? AND (i.topic, i.msg_id) IN (`
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
	tx, err := c.o.db.BeginTx(ctx, nil)
	if err != nil {
		return false, &databaseError{fmt.Errorf("consumer: begin transaction: %w", err)}
	}
	_, err = tx.StmtContext(ctx, stmt).ExecContext(ctx, c.group, inboxID(m.ID), m.Topic, m.Partition, m.Offset, c.o.now())
	switch {
	case mysqlx.IsDuplicate(err):
		return true, tx.Rollback()
	case err != nil:
		return false, errors.Join(&databaseError{fmt.Errorf("consumer: insert inbox row %s: %w", m.ID, err)}, tx.Rollback())
	}
	if err := callTx(ctx, h, tx, m); err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return false, fmt.Errorf("%w (rollback: %v)", err, rerr)
		}
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, &databaseError{fmt.Errorf("consumer: commit: %w", err)}
	}
	return false, nil
}

// databaseError is a failure of the inbox's own statements (begin, the
// inbox row, commit), not of the handler: the database was unreachable,
// failing over or misconfigured, which says nothing about the message.
type databaseError struct{ err error }

func (e *databaseError) Error() string { return e.err.Error() }
func (e *databaseError) Unwrap() error { return e.err }

// unavailable says whether err is the database failing rather than the
// message: the inbox's own statements failing, or a driver's broken
// connection or a server that cannot serve now, whoever met it. Such a
// failure spends no attempt, so that a database failover does not send
// every message it meets to the dead letters.
func unavailable(err error) bool {
	var de *databaseError
	return errors.As(err, &de) || mysqlx.IsUnavailable(err)
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
	cutoff := sqlx.Time(c.o.now().Add(-c.o.retention))
	var total int64
	for {
		n, err := c.purgeBatch(ctx, cutoff)
		total += n
		if err != nil {
			return total, fmt.Errorf("consumer: purge inbox of group %s: %w", c.group, err)
		}
		if n < int64(c.o.purgeBatch) || ctx.Err() != nil {
			return total, nil
		}
	}
}

// purgeBatch deletes up to the purge batch of this group's inbox rows
// processed before cutoff, the oldest first (see selectPurge).
func (c *Consumer) purgeBatch(ctx context.Context, cutoff time.Time) (int64, error) {
	rows, err := c.o.db.QueryContext(ctx, selectPurge, c.group, cutoff, c.o.purgeBatch)
	if err != nil {
		return 0, err
	}
	args := []any{c.group, cutoff}
	for rows.Next() {
		var topic, id []byte
		if err := rows.Scan(&topic, &id); err != nil {
			rows.Close()
			return 0, err
		}
		args = append(args, topic, id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil || len(args) == 2 {
		return 0, err
	}
	pairs := strings.Repeat("(?, ?), ", (len(args)-2)/2)
	res, err := c.o.db.ExecContext(ctx, deletePurge+pairs[:len(pairs)-2]+")", args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
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
