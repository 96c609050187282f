package broker

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/sqlx"
	"github.com/txmsg/txmsg/relay"
)

// HalfSource is the relay.Source of committed half messages: relay.Engine
// delivers them to Kafka with txmsg-source: half. It keeps delivered rows
// (state delivered, with delivered_at) so a late repeated Commit still finds
// the message and answers idempotently; it implements relay.Purger, so the
// engine's retention job (relay.Config.Retention, which broker.Config sets
// to 24h by default) deletes delivered and rolled back rows later. Messages of
// one topic and key are delivered in prepare order unless their group chose
// OrderCommit (see Pending). It is stateless and safe for concurrent use.
type HalfSource struct{}

// NewHalfSource returns the source of committed half messages.
func NewHalfSource() *HalfSource { return &HalfSource{} }

var (
	_ relay.Source         = (*HalfSource)(nil)
	_ relay.Purger         = (*HalfSource)(nil)
	_ relay.ConsistentRead = (*HalfSource)(nil)
	_ relay.Busy           = (*HalfSource)(nil)
)

// chunkLen bounds the list of one releasedHalf query.
const chunkLen = 500

const (
	// pendingHalf reads the committed rows of a shard that wait for nothing:
	// one range of the deliver index (state, shard, waits_for, seq), in seq
	// order, without a sort; the rows that wait are outside it. Forced: while
	// purge lags (a drain, a long transaction elsewhere), the range still
	// holds an entry for every row delivered since, and MariaDB, counting
	// them, chose to read the table in seq order for the LIMIT instead,
	// through every delivered row the retention keeps (40,000 rows for 10).
	pendingHalf = `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts
FROM txmsg_half_messages FORCE INDEX (txmsg_half_messages_deliver)
WHERE state = ? AND shard = ? AND waits_for IS NULL
ORDER BY seq
LIMIT ?`
	// nextWaitedFor returns the least seq above ? of a message that
	// committed rows of a shard wait for (NULL when there is none), and
	// whether it is still prepared: two index dives, however many rows wait.
	nextWaitedFor = `SELECT b.seq, EXISTS (SELECT 1 FROM txmsg_half_messages p WHERE p.seq = b.seq AND p.state = ?)
FROM (SELECT MIN(waits_for) AS seq FROM txmsg_half_messages WHERE state = ? AND shard = ? AND waits_for > ?) b`
	// releasedHalf reads the committed rows of a shard that wait for one of
	// the listed messages, which have all left prepared, less those that an
	// earlier prepared message of their topic and key still holds back: a
	// row records only the latest such message, and earlier ones may still
	// be prepared when that one leaves (one dive into the key index each).
	// Both indexes are forced: left to choose, MariaDB may scan the table in
	// seq order for the LIMIT, or read every prepared message of the group
	// (see selectTargets).
	releasedHalf = `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts
FROM txmsg_half_messages h FORCE INDEX (txmsg_half_messages_deliver)
WHERE state = ? AND shard = ?
  AND NOT EXISTS (SELECT 1 FROM txmsg_half_messages p FORCE INDEX (txmsg_half_messages_key)
                  WHERE p.topic = h.topic AND p.msg_key = h.msg_key AND p.state = ? AND p.seq < h.seq
                    AND p.producer_group = h.producer_group)
  AND waits_for IN (`
	// busyHalf tells, for each shard of a JSON array, whether it holds
	// committed rows (1, or NULL): one dive into the deliver index per
	// shard, however many rows there are. A subquery in the select list:
	// an EXISTS in the WHERE is a semi-join, which MariaDB may materialize
	// by reading every committed row (its plan on an empty table).
	busyHalf = `SELECT s.shard, (SELECT 1 FROM txmsg_half_messages h FORCE INDEX (txmsg_half_messages_deliver)
                  WHERE h.state = ? AND h.shard = s.shard LIMIT 1)
FROM JSON_TABLE(?, '$[*]' COLUMNS (shard SMALLINT UNSIGNED PATH '$')) s`
	deliveredHalf = `UPDATE txmsg_half_messages
SET state = ?, delivered_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6)
WHERE state = ? AND seq IN (`
	failedHalf = `UPDATE txmsg_half_messages
SET attempts = attempts + 1, last_error = ?, updated_at = UTC_TIMESTAMP(6)
WHERE seq IN (`
	removeHalf = `UPDATE txmsg_half_messages
SET state = ?, updated_at = UTC_TIMESTAMP(6)
WHERE state = ? AND seq IN (`
	purgeDelivered = `DELETE FROM txmsg_half_messages WHERE delivered_at < ? AND state = ? LIMIT ?`
	// purgeRolledBack reads the due index (state, next_check_at), which
	// orders resolved rows by when they were resolved: resolving sets
	// next_check_at too (rows resolved by an older txmsg, to a time at most
	// a check timeout later). Told its index, its cost is the rows it
	// deletes, not every rolled back row the retention keeps.
	purgeRolledBack = `DELETE h FROM txmsg_half_messages h
JOIN (SELECT seq FROM txmsg_half_messages FORCE INDEX (txmsg_half_messages_due)
      WHERE state = ? AND next_check_at < ? AND resolved_at < ? ORDER BY next_check_at LIMIT ?) d USING (seq)
WHERE h.state = ?`
	// History outlives its message by at most the retention; that of
	// messages still prepared or discarded is kept.
	purgeChecks = `DELETE FROM txmsg_half_checks WHERE checked_at < ?
AND msg_id NOT IN (SELECT id FROM txmsg_half_messages WHERE state IN (?, ?))
ORDER BY checked_at LIMIT ?`
)

// Name implements relay.Source: "half".
func (*HalfSource) Name() string { return txmsg.SourceHalf }

// Pending implements relay.Source: committed messages of shard in seq
// order, less those that wait for an earlier message of their topic and key.
//
// Commit records in a message of a group that delivers in OrderPrepare the
// latest earlier prepared message of its topic and key, if any (waits_for);
// a message that waits for nothing is read from the deliver index as
// before. When messages of the shard wait, Pending walks the messages they
// wait for (one query each), reads the rows waiting for those that have left
// prepared and that no other earlier message of their key holds back, and
// merges both lists in seq order. Rows waiting for a message still prepared
// are not read at all, so a key held back by a lost commit call costs
// nothing per poll however many of its messages queue behind it.
//
// The common case takes two reads: the rows that wait for nothing, then
// whether any row of the shard waits. In that order, none waiting means the
// first read missed nothing: a row r it returned was committed when no
// earlier message of r's key was prepared, so every earlier row of the key
// was committed (or resolved) before r, and one of them that waits would
// still be waiting at the second read. Otherwise
// the reads must see one state, or a row could start waiting and its message
// leave prepared between them: when q can begin transactions (*sql.DB,
// *sql.Conn), Pending reads again in a read-only REPEATABLE READ
// transaction; a *sql.Tx passed as q must be at REPEATABLE READ or above.
func (*HalfSource) Pending(ctx context.Context, q relay.Querier, shard int, limit relay.Limit) ([]relay.Row, error) {
	rows, err := pending(ctx, q, shard, limit)
	if err != nil {
		return nil, fmt.Errorf("broker: pending of shard %d: %w", shard, err)
	}
	return rows, nil
}

// ConsistentRead implements relay.ConsistentRead: given the pool, Pending
// opens a transaction only when rows of the shard wait (see Pending), so an
// idle shard's poll is two statements instead of five.
func (*HalfSource) ConsistentRead() bool { return true }

// BusyShards implements relay.Busy: the shards below shards holding
// committed rows, those that wait for an earlier message included. The
// relay then wakes those shards, and an idle broker's 16 shards cost one
// statement per poll interval instead of a poll each.
func (*HalfSource) BusyShards(ctx context.Context, q relay.Querier, shards int) ([]int, error) {
	list := make([]byte, 0, 4*shards+2)
	list = append(list, '[')
	for i := range shards {
		if i > 0 {
			list = append(list, ',')
		}
		list = strconv.AppendInt(list, int64(i), 10)
	}
	rows, err := q.QueryContext(ctx, busyHalf, halfmsg.StateCommitted, string(append(list, ']')))
	if err != nil {
		return nil, fmt.Errorf("broker: busy shards: %w", err)
	}
	defer rows.Close()
	var busy []int
	for rows.Next() {
		var (
			shard int
			held  sql.NullInt64
		)
		if err := rows.Scan(&shard, &held); err != nil {
			return nil, fmt.Errorf("broker: busy shards: %w", err)
		}
		if held.Valid {
			busy = append(busy, shard)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("broker: busy shards: %w", err)
	}
	return busy, nil
}

// txBeginner is a Querier that can open the transaction Pending reads in.
type txBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

func pending(ctx context.Context, q relay.Querier, shard int, limit relay.Limit) ([]relay.Row, error) {
	ready, err := readyRows(ctx, q, shard, limit)
	if err != nil {
		return nil, err
	}
	if first, _, err := nextWait(ctx, q, shard, 0); err != nil || !first.Valid {
		return ready, err
	}
	if b, ok := q.(txBeginner); ok {
		tx, err := b.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("begin read: %w", err)
		}
		defer func() { _ = tx.Rollback() }()
		q = tx
		if ready, err = readyRows(ctx, tx, shard, limit); err != nil {
			return nil, err
		}
	}
	released, err := releasedWaits(ctx, q, shard)
	if err != nil || len(released) == 0 {
		return ready, err
	}
	lists := [][]relay.Row{ready}
	for len(released) > 0 {
		chunk := released[:min(len(released), chunkLen)]
		released = released[len(chunk):]
		rows, err := q.QueryContext(ctx, releasedHalf+sqlx.Placeholders(len(chunk))+") ORDER BY seq LIMIT ?",
			append(append([]any{halfmsg.StateCommitted, shard, halfmsg.StatePrepared}, chunk...), limit.Rows)...)
		if err != nil {
			return nil, fmt.Errorf("released rows: %w", err)
		}
		rs, err := relay.ScanRows(rows, limit.Bytes)
		if err != nil {
			return nil, fmt.Errorf("released rows: %w", err)
		}
		lists = append(lists, rs)
	}
	merged := mergeBySeq(lists)
	var size int64
	for i, r := range merged {
		if i == limit.Rows || (limit.Bytes > 0 && size >= limit.Bytes) {
			return merged[:i], nil
		}
		size += int64(len(r.Key) + len(r.Value))
	}
	return merged, nil
}

// readyRows reads the committed rows of shard that wait for nothing.
func readyRows(ctx context.Context, q relay.Querier, shard int, limit relay.Limit) ([]relay.Row, error) {
	rows, err := q.QueryContext(ctx, pendingHalf, halfmsg.StateCommitted, shard, limit.Rows)
	if err != nil {
		return nil, err
	}
	return relay.ScanRows(rows, limit.Bytes)
}

// nextWait returns the least seq above after of a message that committed
// rows of shard wait for (invalid when there is none), and whether that
// message is still prepared.
func nextWait(ctx context.Context, q relay.Querier, shard int, after int64) (sql.NullInt64, bool, error) {
	var (
		seq      sql.NullInt64
		prepared sql.NullBool
	)
	rows, err := q.QueryContext(ctx, nextWaitedFor, halfmsg.StatePrepared, halfmsg.StateCommitted, shard, after)
	if err != nil {
		return seq, false, fmt.Errorf("messages waited for: %w", err)
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(&seq, &prepared); err != nil {
			return seq, false, fmt.Errorf("messages waited for: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return seq, false, fmt.Errorf("messages waited for: %w", err)
	}
	return seq, prepared.Bool, nil
}

// releasedWaits returns the seqs of the messages that committed rows of
// shard wait for and that have left prepared, walking the distinct messages
// waited for one query each: a loose index scan. (A recursive CTE would say
// it in one query, but MariaDB does not keep the index range for the
// correlated bound of its recursive part, and scans every committed row of
// the shard.)
func releasedWaits(ctx context.Context, q relay.Querier, shard int) ([]any, error) {
	var (
		out   []any
		after int64
	)
	for {
		seq, prepared, err := nextWait(ctx, q, shard, after)
		if err != nil || !seq.Valid {
			return out, err
		}
		after = seq.Int64
		if !prepared {
			out = append(out, after)
		}
	}
}

// mergeBySeq merges lists sorted by seq into one. Each list holds the first
// rows of its set within the round's limit, so the first rows of the union
// within that limit are all among them: a row a list left out comes after a
// prefix of that list that alone reaches the limit.
func mergeBySeq(lists [][]relay.Row) []relay.Row {
	var out []relay.Row
	for _, l := range lists {
		out = append(out, l...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

func seqArgs(rows []relay.Row, lead ...any) (string, []any) {
	args := make([]any, 0, len(lead)+len(rows))
	args = append(args, lead...)
	for _, r := range rows {
		args = append(args, r.Seq)
	}
	return sqlx.Placeholders(len(rows)) + ")", args
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

// SingleMark implements relay.SingleMark: Delivered is one UPDATE, up to
// the protocol's 65,535 placeholders.
func (*HalfSource) SingleMark(n int) bool { return n+2 <= 65535 }

// Failed implements relay.Source: one more attempt and its reason.
func (*HalfSource) Failed(ctx context.Context, e relay.Execer, rows []relay.Row, reason string) error {
	if len(rows) == 0 {
		return nil
	}
	in, args := seqArgs(rows, sqlx.Truncate(reason, 1024))
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

// Backlog implements relay.Source: committed messages not yet delivered,
// counted as stateBacklog says (exact up to 10,000, bounded cost above).
func (*HalfSource) Backlog(ctx context.Context, q relay.Querier) (int64, time.Time, error) {
	n, oldest, err := stateBacklog(ctx, q, halfmsg.StateCommitted)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("broker: committed backlog: %w", err)
	}
	return n, oldest, nil
}

// Purge implements relay.Purger: it deletes messages delivered before
// deliveredBefore and messages rolled back before it, at most limit in all,
// and returns how many. Discarded messages are never purged: an operator
// resolves them. Once no message is left to purge, it also deletes up to
// limit check-history rows older than deliveredBefore whose message is
// neither prepared nor discarded.
func (*HalfSource) Purge(ctx context.Context, e relay.Execer, deliveredBefore time.Time, limit int) (int64, error) {
	before := sqlx.Time(deliveredBefore)
	res, err := e.ExecContext(ctx, purgeDelivered, before, halfmsg.StateDelivered, limit)
	if err != nil {
		return 0, fmt.Errorf("broker: purge delivered: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil || n >= int64(limit) {
		return n, err
	}
	res, err = e.ExecContext(ctx, purgeRolledBack, halfmsg.StateRolledBack, before, before, int64(limit)-n, halfmsg.StateRolledBack)
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
