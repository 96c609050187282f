package broker

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/relay"
)

// HalfSource is the relay.Source of committed half messages: relay.Engine
// delivers them to Kafka with txmsg-source: half. It keeps delivered rows
// (state delivered, with delivered_at) so a late repeated Commit still finds
// the message and answers idempotently; it implements relay.Purger, so the
// engine's retention job (relay.Config.Retention, which broker.Config sets
// to 24h by default) deletes delivered and rolled back rows later. It is stateless and safe for
// concurrent use.
type HalfSource struct{}

// NewHalfSource returns the source of committed half messages.
func NewHalfSource() *HalfSource { return &HalfSource{} }

var (
	_ relay.Source = (*HalfSource)(nil)
	_ relay.Purger = (*HalfSource)(nil)
)

const (
	pendingHalf = `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts
FROM txmsg_half_messages
WHERE state = ? AND shard = ?
ORDER BY seq
LIMIT ?`
	deliveredHalf = `UPDATE txmsg_half_messages
SET state = ?, delivered_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6)
WHERE state = ? AND seq IN (`
	failedHalf = `UPDATE txmsg_half_messages
SET attempts = attempts + 1, last_error = ?, updated_at = UTC_TIMESTAMP(6)
WHERE seq IN (`
	removeHalf = `UPDATE txmsg_half_messages
SET state = ?, updated_at = UTC_TIMESTAMP(6)
WHERE state = ? AND seq IN (`
	backlogHalf     = `SELECT COUNT(*), MIN(created_at) FROM txmsg_half_messages WHERE state = ?`
	purgeDelivered  = `DELETE FROM txmsg_half_messages WHERE delivered_at < ? AND state = ? LIMIT ?`
	purgeRolledBack = `DELETE FROM txmsg_half_messages WHERE state = ? AND resolved_at < ? LIMIT ?`
	// History outlives its message by at most the retention; that of
	// messages still prepared or discarded is kept.
	purgeChecks = `DELETE FROM txmsg_half_checks WHERE checked_at < ?
AND msg_id NOT IN (SELECT id FROM txmsg_half_messages WHERE state IN (?, ?))
ORDER BY checked_at LIMIT ?`
)

// Name implements relay.Source: "half".
func (*HalfSource) Name() string { return txmsg.SourceHalf }

// Pending implements relay.Source: committed messages of shard in seq order.
func (*HalfSource) Pending(ctx context.Context, q relay.Querier, shard int, limit relay.Limit) ([]relay.Row, error) {
	rows, err := q.QueryContext(ctx, pendingHalf, halfmsg.StateCommitted, shard, limit.Rows)
	if err != nil {
		return nil, fmt.Errorf("broker: pending of shard %d: %w", shard, err)
	}
	out, err := relay.ScanRows(rows, limit.Bytes)
	if err != nil {
		return nil, fmt.Errorf("broker: pending of shard %d: %w", shard, err)
	}
	return out, nil
}

func seqArgs(rows []relay.Row, lead ...any) (string, []any) {
	args := make([]any, 0, len(lead)+len(rows))
	args = append(args, lead...)
	for _, r := range rows {
		args = append(args, r.Seq)
	}
	return strings.Repeat("?,", len(rows)-1) + "?)", args
}

// Delivered implements relay.Source: the rows become delivered.
func (*HalfSource) Delivered(ctx context.Context, e relay.Execer, rows []relay.Row) error {
	if len(rows) == 0 {
		return nil
	}
	in, args := seqArgs(rows, halfmsg.StateDelivered, halfmsg.StateCommitted)
	if _, err := e.ExecContext(ctx, deliveredHalf+in, args...); err != nil {
		return fmt.Errorf("broker: mark %d delivered: %w", len(rows), err)
	}
	return nil
}

// Failed implements relay.Source: one more attempt and its reason.
func (*HalfSource) Failed(ctx context.Context, e relay.Execer, rows []relay.Row, reason string) error {
	if len(rows) == 0 {
		return nil
	}
	in, args := seqArgs(rows, truncate(reason, 1024))
	if _, err := e.ExecContext(ctx, failedHalf+in, args...); err != nil {
		return fmt.Errorf("broker: mark %d failed: %w", len(rows), err)
	}
	return nil
}

// Remove implements relay.Source: the rows become dead (the engine copies
// them to txmsg_dead_letters in the same transaction).
func (*HalfSource) Remove(ctx context.Context, e relay.Execer, rows []relay.Row) error {
	if len(rows) == 0 {
		return nil
	}
	in, args := seqArgs(rows, halfmsg.StateDead, halfmsg.StateCommitted)
	if _, err := e.ExecContext(ctx, removeHalf+in, args...); err != nil {
		return fmt.Errorf("broker: mark %d dead: %w", len(rows), err)
	}
	return nil
}

// Backlog implements relay.Source: committed messages not yet delivered.
func (*HalfSource) Backlog(ctx context.Context, q relay.Querier) (int64, time.Time, error) {
	rows, err := q.QueryContext(ctx, backlogHalf, halfmsg.StateCommitted)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("broker: committed backlog: %w", err)
	}
	defer rows.Close()
	var (
		n      int64
		oldest sql.NullTime
	)
	if rows.Next() {
		if err := rows.Scan(&n, &oldest); err != nil {
			return 0, time.Time{}, fmt.Errorf("broker: committed backlog: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, time.Time{}, fmt.Errorf("broker: committed backlog: %w", err)
	}
	return n, oldest.Time, nil
}

// Purge implements relay.Purger: it deletes messages delivered before
// deliveredBefore and messages rolled back before it, at most limit in all,
// and returns how many. Discarded messages are never purged: an operator
// resolves them. Once no message is left to purge, it also deletes up to
// limit check-history rows older than deliveredBefore whose message is
// neither prepared nor discarded.
func (*HalfSource) Purge(ctx context.Context, e relay.Execer, deliveredBefore time.Time, limit int) (int64, error) {
	before := deliveredBefore.UTC()
	res, err := e.ExecContext(ctx, purgeDelivered, before, halfmsg.StateDelivered, limit)
	if err != nil {
		return 0, fmt.Errorf("broker: purge delivered: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil || n >= int64(limit) {
		return n, err
	}
	res, err = e.ExecContext(ctx, purgeRolledBack, halfmsg.StateRolledBack, before, int64(limit)-n)
	if err != nil {
		return n, fmt.Errorf("broker: purge rolled back: %w", err)
	}
	m, err := res.RowsAffected()
	if err != nil {
		return n, fmt.Errorf("broker: purge rolled back: %w", err)
	}
	if n+m < int64(limit) {
		if _, err := e.ExecContext(ctx, purgeChecks, before, halfmsg.StatePrepared, halfmsg.StateDiscarded, limit); err != nil {
			return n + m, fmt.Errorf("broker: purge check history: %w", err)
		}
	}
	return n + m, nil
}
