package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/codec"
	"github.com/txmsg/txmsg/internal/sqlx"
)

// The outbox tables, created by migration 0001.
const (
	outboxTable = "txmsg_outbox"
	// archiveTable keeps delivered rows when the relay runs with a retention.
	archiveTable = "txmsg_outbox_delivered"
)

// The outbox source's statements. A statement ending in "IN (" gets one "?"
// per seq of a shard.
const (
	// A range scan of the clustered (shard, seq) key: no lookups, no sort.
	outboxPending = `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts FROM ` + outboxTable +
		` WHERE shard = ? ORDER BY seq LIMIT ?`
	// The same from a seq on: the rows below it are behind the worker.
	outboxFrom = `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts FROM ` + outboxTable +
		` WHERE shard = ? AND seq >= ? ORDER BY seq LIMIT ?`
	// One dive to the right end of the seq index.
	outboxHead = `SELECT MAX(seq) FROM ` + outboxTable
	// A shard's lowest and highest pending rows from a seq on: ranges of the
	// clustered key, forced, since on the seq index every delete-marked entry
	// (a delivered row purge has not removed yet) costs a clustered lookup.
	// Read from where the last reading found the shard's first pending row,
	// they step over only the rows delivered since.
	outboxBacklogLow = `SELECT seq, created_at FROM ` + outboxTable +
		` FORCE INDEX (PRIMARY) WHERE shard = ? AND seq >= ? ORDER BY seq LIMIT 1`
	outboxBacklogHigh  = `SELECT MAX(seq) FROM ` + outboxTable + ` FORCE INDEX (PRIMARY) WHERE shard = ? AND seq >= ?`
	outboxBacklogCount = `SELECT COUNT(*) FROM ` + outboxTable + ` WHERE seq BETWEEN ? AND ?`
	// A range of the seq index over the rows inserted since the last look.
	outboxChanged = `SELECT shard, MAX(seq) FROM ` + outboxTable + ` WHERE seq > ? GROUP BY shard`
	outboxDeliver = `DELETE FROM ` + outboxTable + ` WHERE shard = ? AND seq IN (`
	outboxFailed  = `UPDATE ` + outboxTable + ` SET attempts = attempts + 1, last_error = ? WHERE shard = ? AND seq IN (`
	outboxRemove  = `DELETE FROM ` + outboxTable + ` WHERE shard = ? AND seq IN (`
	// IGNORE: after a crash between copy and delete the row is sent again,
	// and its second copy is dropped.
	outboxArchive = `INSERT IGNORE INTO ` + archiveTable +
		` (seq, shard, id, topic, msg_key, value, headers, created_at, delivered_at)
SELECT seq, shard, id, topic, msg_key, value, headers, created_at, UTC_TIMESTAMP(6) FROM ` + outboxTable +
		` WHERE shard = ? AND seq IN (`
	outboxPurge = `DELETE FROM ` + archiveTable + ` WHERE delivered_at < ? ORDER BY delivered_at LIMIT ?`
)

// OutboxSource drains the txmsg_outbox table written by package outbox.
type OutboxSource struct {
	keep bool
}

// NewOutboxSource returns the Source for the txmsg_outbox table. Delivered
// rows are deleted; with keep set they are first copied to
// txmsg_outbox_delivered, which Purge empties after the retention.
func NewOutboxSource(keep bool) *OutboxSource { return &OutboxSource{keep: keep} }

// Name implements Source.
func (s *OutboxSource) Name() string { return txmsg.SourceOutbox }

// Pending implements Source.
func (s *OutboxSource) Pending(ctx context.Context, q Querier, shard int, limit Limit) ([]Row, error) {
	rows, err := q.QueryContext(ctx, outboxPending, shard, limit.Rows)
	if err != nil {
		return nil, err
	}
	return ScanRows(rows, limit.Bytes)
}

// PendingFrom implements Seeker.
func (s *OutboxSource) PendingFrom(ctx context.Context, q Querier, shard int, from int64, limit Limit) ([]Row, error) {
	rows, err := q.QueryContext(ctx, outboxFrom, shard, from, limit.Rows)
	if err != nil {
		return nil, err
	}
	return ScanRows(rows, limit.Bytes)
}

// oldestTx reads the database's clock, whether the list of running
// transactions shows the caller's own, and when the oldest listed one
// started. InnoDB serves information_schema.innodb_trx from a cache it
// refreshes only when nobody read it for 100 ms, so with frequent readers
// (several relays) the list can be old: it is trusted only when it shows
// the caller's transaction, which started before the head was read.
// trx_started has whole seconds, rounded down: earlier than the truth, the
// safe side. It needs the PROCESS privilege (MySQL and MariaDB alike).
const oldestTx = `SELECT NOW(6), COALESCE(SUM(trx_mysql_thread_id = CONNECTION_ID()), 0), MIN(trx_started)
FROM information_schema.innodb_trx`

// Head implements Seeker. It reads in a transaction of its own, which the
// list of running transactions must show (see oldestTx); when it does not,
// oldest is the Unix epoch, before any reading: nothing settles.
func (s *OutboxSource) Head(ctx context.Context, db *sql.DB) (int64, time.Time, time.Time, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, time.Time{}, time.Time{}, err
	}
	defer tx.Rollback()
	// The first read starts the transaction inside InnoDB.
	var head sql.NullInt64
	if err := queryRow(ctx, tx, outboxHead, nil, &head); err != nil {
		return 0, time.Time{}, time.Time{}, err
	}
	var at time.Time
	var self int
	var oldest sql.NullTime
	if err := queryRow(ctx, tx, oldestTx, nil, &at, &self, &oldest); err != nil {
		return 0, time.Time{}, time.Time{}, err
	}
	if self == 0 || !oldest.Valid {
		return head.Int64, at, time.Unix(0, 0).UTC(), nil
	}
	return head.Int64, at, oldest.Time, nil
}

// queryRow runs query with args and scans its one row into dest.
func queryRow(ctx context.Context, q Querier, query string, args []any, dest ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

// ScanRows reads rows of the columns seq, id, shard, topic, msg_key, value,
// headers, created_at, attempts, and closes them. It stops after the row
// that brings the keys and values read to maxBytes (no limit when <= 0).
// A row whose headers do not decode is returned marked, and the Engine
// dead-letters it as stored: failing the read would stop its shard for good.
// Sources share it.
func ScanRows(rows *sql.Rows, maxBytes int64) ([]Row, error) {
	defer rows.Close()
	var out []Row
	var size int64
	for (maxBytes <= 0 || size < maxBytes) && rows.Next() {
		var r Row
		var hdr []byte
		if err := rows.Scan(&r.Seq, &r.ID, &r.Shard, &r.Topic, &r.Key, &r.Value, &hdr, &r.CreatedAt, &r.Attempts); err != nil {
			return nil, err
		}
		if hs, err := codec.DecodeHeaders(hdr); err != nil {
			r.badHeaders, r.rawHeaders = fmt.Errorf("message %s: %w", r.ID, err), hdr
		} else {
			r.Headers = hs
		}
		size += int64(len(r.Key) + len(r.Value))
		out = append(out, r)
	}
	return out, rows.Err()
}

// Delivered implements Source: archive the rows when kept, then delete them.
func (s *OutboxSource) Delivered(ctx context.Context, e Execer, rows []Row) error {
	if s.keep {
		if err := s.exec(ctx, e, outboxArchive, nil, rows); err != nil {
			return err
		}
	}
	return s.exec(ctx, e, outboxDeliver, nil, rows)
}

// Failed implements Source.
func (s *OutboxSource) Failed(ctx context.Context, e Execer, rows []Row, reason string) error {
	return s.exec(ctx, e, outboxFailed, []any{sqlx.Truncate(reason, 1024)}, rows)
}

// Remove implements Source.
func (s *OutboxSource) Remove(ctx context.Context, e Execer, rows []Row) error {
	return s.exec(ctx, e, outboxRemove, nil, rows)
}

// exec runs prefix + "?,…)" once per shard among rows, with args, the shard
// and the shard's seqs as arguments.
func (s *OutboxSource) exec(ctx context.Context, e Execer, prefix string, args []any, rows []Row) error {
	byShard := map[int][]any{}
	var order []int
	for _, r := range rows {
		if _, ok := byShard[r.Shard]; !ok {
			order = append(order, r.Shard)
		}
		byShard[r.Shard] = append(byShard[r.Shard], r.Seq)
	}
	for _, shard := range order {
		seqs := byShard[shard]
		q := prefix + sqlx.Placeholders(len(seqs)) + ")"
		all := append(append(append(make([]any, 0, len(args)+1+len(seqs)), args...), shard), seqs...)
		if _, err := e.ExecContext(ctx, q, all...); err != nil {
			return err
		}
	}
	return nil
}

// exactBacklog is the most pending rows Backlog counts one by one (a range
// of the seq index); above it, the span of pending seqs stands for the count.
const exactBacklog = 10000

// Backlog implements Source: BacklogFrom over the default shard count,
// each shard read from its start. The Engine calls BacklogFrom instead.
func (s *OutboxSource) Backlog(ctx context.Context, q Querier) (int64, time.Time, error) {
	n, oldest, _, err := s.BacklogFrom(ctx, q, make([]int64, DefaultConfig().Shards))
	return n, oldest, err
}

// BacklogFrom implements ShardBacklog. The count is exact up to
// exactBacklog rows; above, it is the span from the lowest to the highest
// pending seq, an upper bound (delivered rows in between count too). The
// oldest row is the earliest created among the shards' first pending rows.
func (s *OutboxSource) BacklogFrom(ctx context.Context, q Querier, from []int64) (int64, time.Time, []int64, error) {
	lows := make([]int64, len(from))
	var lo, hi int64
	var oldest time.Time
	for shard, f := range from {
		var seq int64
		var at time.Time
		err := queryRow(ctx, q, outboxBacklogLow, []any{shard, f}, &seq, &at)
		if errors.Is(err, sql.ErrNoRows) {
			lows[shard] = -1
			continue
		}
		if err != nil {
			return 0, time.Time{}, nil, err
		}
		lows[shard] = seq
		var top sql.NullInt64
		if err := queryRow(ctx, q, outboxBacklogHigh, []any{shard, seq}, &top); err != nil {
			return 0, time.Time{}, nil, err
		}
		if lo == 0 || seq < lo {
			lo = seq
		}
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
		hi = max(hi, top.Int64, seq)
	}
	if lo == 0 {
		return 0, time.Time{}, lows, nil
	}
	n := hi - lo + 1
	if n <= exactBacklog {
		if err := queryRow(ctx, q, outboxBacklogCount, []any{lo, hi}, &n); err != nil {
			return 0, time.Time{}, nil, err
		}
	}
	return n, oldest, lows, nil
}

// Changed implements Changes.
func (s *OutboxSource) Changed(ctx context.Context, q Querier, after int64) ([]int, int64, error) {
	rows, err := q.QueryContext(ctx, outboxChanged, after)
	if err != nil {
		return nil, after, err
	}
	defer rows.Close()
	var shards []int
	last := after
	for rows.Next() {
		var shard int
		var seq int64
		if err := rows.Scan(&shard, &seq); err != nil {
			return nil, after, err
		}
		shards = append(shards, shard)
		last = max(last, seq)
	}
	return shards, last, rows.Err()
}

// Purge implements Purger: delete up to limit archived rows delivered
// before t.
func (s *OutboxSource) Purge(ctx context.Context, e Execer, t time.Time, limit int) (int64, error) {
	res, err := e.ExecContext(ctx, outboxPurge, t.UTC(), limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
