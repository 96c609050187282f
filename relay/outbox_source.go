package relay

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/codec"
	"github.com/txmsg/txmsg/internal/sqlx"
)

// OutboxSource drains an outbox table written by package outbox.
type OutboxSource struct {
	table     string
	retention bool
	pending   string
	backlog   string
	changed   string
}

// NewOutboxSource returns the Source for an outbox table (normally
// "txmsg_outbox"). With keep set, delivered rows are marked delivered_at and
// left for the purge job; otherwise they are deleted on delivery.
func NewOutboxSource(table string, keep bool) (*OutboxSource, error) {
	if !sqlx.ValidIdent(table) {
		return nil, fmt.Errorf("relay: outbox table %q: want letters, digits and underscores", table)
	}
	return &OutboxSource{
		table:     table,
		retention: keep,
		// The (shard, delivered_at, seq) index serves this as a range scan in seq order.
		pending: `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts FROM ` + table +
			` WHERE shard = ? AND delivered_at IS NULL ORDER BY seq LIMIT ?`,
		backlog: `SELECT COUNT(*), MIN(created_at) FROM ` + table + ` WHERE delivered_at IS NULL`,
		// A primary-key range over the rows inserted since the last look.
		changed: `SELECT shard, MAX(seq) FROM ` + table + ` WHERE seq > ? GROUP BY shard`,
	}, nil
}

// Name implements Source.
func (s *OutboxSource) Name() string { return txmsg.SourceOutbox }

// Pending implements Source.
func (s *OutboxSource) Pending(ctx context.Context, q Querier, shard, limit int) ([]Row, error) {
	rows, err := q.QueryContext(ctx, s.pending, shard, limit)
	if err != nil {
		return nil, err
	}
	return ScanRows(rows)
}

// ScanRows reads rows of the columns seq, id, shard, topic, msg_key, value,
// headers, created_at, attempts, and closes them. Sources share it.
func ScanRows(rows *sql.Rows) ([]Row, error) {
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var r Row
		var hdr []byte
		if err := rows.Scan(&r.Seq, &r.ID, &r.Shard, &r.Topic, &r.Key, &r.Value, &hdr, &r.CreatedAt, &r.Attempts); err != nil {
			return nil, err
		}
		hs, err := codec.DecodeHeaders(hdr)
		if err != nil {
			return nil, fmt.Errorf("row %s: %w", r.ID, err)
		}
		r.Headers = hs
		out = append(out, r)
	}
	return out, rows.Err()
}

// Delivered implements Source: delete the rows, or mark them when kept.
func (s *OutboxSource) Delivered(ctx context.Context, e Execer, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	in, args := seqIn(rows)
	q := `DELETE FROM ` + s.table + ` WHERE seq IN (` + in + `)`
	if s.retention {
		q = `UPDATE ` + s.table + ` SET delivered_at = UTC_TIMESTAMP(6) WHERE seq IN (` + in + `)`
	}
	_, err := e.ExecContext(ctx, q, args...)
	return err
}

// Failed implements Source.
func (s *OutboxSource) Failed(ctx context.Context, e Execer, rows []Row, reason string) error {
	if len(rows) == 0 {
		return nil
	}
	in, args := seqIn(rows)
	args = append([]any{truncate(reason, 1024)}, args...)
	_, err := e.ExecContext(ctx, `UPDATE `+s.table+` SET attempts = attempts + 1, last_error = ? WHERE seq IN (`+in+`)`, args...)
	return err
}

// Remove implements Source.
func (s *OutboxSource) Remove(ctx context.Context, e Execer, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	in, args := seqIn(rows)
	_, err := e.ExecContext(ctx, `DELETE FROM `+s.table+` WHERE seq IN (`+in+`)`, args...)
	return err
}

// Backlog implements Source.
func (s *OutboxSource) Backlog(ctx context.Context, q Querier) (int64, time.Time, error) {
	rows, err := q.QueryContext(ctx, s.backlog)
	if err != nil {
		return 0, time.Time{}, err
	}
	defer rows.Close()
	var n int64
	var oldest sql.NullTime
	if rows.Next() {
		if err := rows.Scan(&n, &oldest); err != nil {
			return 0, time.Time{}, err
		}
	}
	return n, oldest.Time, rows.Err()
}

// Changed implements Changes.
func (s *OutboxSource) Changed(ctx context.Context, q Querier, after int64) ([]int, int64, error) {
	rows, err := q.QueryContext(ctx, s.changed, after)
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

// Purge implements Purger: delete up to limit rows delivered before t.
func (s *OutboxSource) Purge(ctx context.Context, e Execer, t time.Time, limit int) (int64, error) {
	res, err := e.ExecContext(ctx, `DELETE FROM `+s.table+` WHERE delivered_at < ? ORDER BY delivered_at LIMIT ?`, t.UTC(), limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// seqIn renders "?,?,…" and the seqs of rows as arguments.
func seqIn(rows []Row) (string, []any) {
	args := make([]any, len(rows))
	for i, r := range rows {
		args[i] = r.Seq
	}
	return strings.TrimSuffix(strings.Repeat("?,", len(rows)), ","), args
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
