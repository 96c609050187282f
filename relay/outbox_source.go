package relay

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
	// One dive into the clustered (shard, seq) key.
	outboxStray = `SELECT shard FROM ` + outboxTable + ` WHERE shard >= ? ORDER BY shard LIMIT 1`
	// One dive to the right end of the seq index, stepping back over the
	// delete-marked entries there (see outboxHeadFrom): read once, by
	// Newest and the first Head.
	outboxHead = `SELECT MAX(seq) FROM ` + outboxTable + ` WHERE seq >= ?`
	// outboxHeadFrom is the same read forwards from a seq the relay has
	// seen. MariaDB reads MAX(seq) backwards from the end of the index, and
	// steps over every delete-marked entry it meets there whatever the lower
	// bound: every row delivered since purge last ran, all of them while a
	// long transaction elsewhere holds purge back (24 ms for 200,000, read
	// every horizonInterval, and growing). Forwards it steps over the rows
	// inserted since the last reading, at most 100,000 of them: a burst
	// larger than that only moves the head up more slowly.
	outboxHeadFrom = `SELECT MAX(seq) FROM (SELECT seq FROM ` + outboxTable +
		` WHERE seq >= ? ORDER BY seq LIMIT 100000) d`
	// A shard's lowest and highest pending rows from a seq on: ranges of the
	// clustered key, forced, since on the seq index every delete-marked entry
	// (a delivered row purge has not removed yet) costs a clustered lookup.
	// Read from where the last reading found the shard's first pending row,
	// they step over only the rows delivered since.
	outboxBacklogLow = `SELECT seq, created_at FROM ` + outboxTable +
		` FORCE INDEX (PRIMARY) WHERE shard = ? AND seq >= ? ORDER BY seq LIMIT 1`
	outboxBacklogHigh  = `SELECT MAX(seq) FROM ` + outboxTable + ` FORCE INDEX (PRIMARY) WHERE shard = ? AND seq >= ?`
	outboxBacklogCount = `SELECT COUNT(*) FROM ` + outboxTable + ` WHERE seq BETWEEN ? AND ?`
	// Ranges of the seq index (it holds the shard too): the rows inserted
	// since the last look, and those that may commit late below them. The
	// gaps go before the ORDER BY (see arrivalsQuery).
	outboxArrivals    = `SELECT seq, shard FROM ` + outboxTable + ` WHERE seq > ?`
	outboxArrivalRows = `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts FROM ` + outboxTable +
		` WHERE seq > ?`
	// The same, with keys, values and headers only of the shards listed
	// (%[1]s, a condition on shard).
	outboxArrivalRowsOf = `SELECT seq, id, shard, topic, IF(%[1]s, msg_key, NULL), IF(%[1]s, value, ''),
		IF(%[1]s, headers, NULL), created_at, attempts FROM ` + outboxTable + ` WHERE seq > ?`
	outboxArrivalsOrder = ` ORDER BY seq LIMIT ?`
	outboxFailed        = `UPDATE ` + outboxTable + ` SET attempts = attempts + 1, last_error = ? WHERE shard = ? AND seq IN (`
	outboxRemove        = `DELETE FROM ` + outboxTable + ` WHERE shard = ? AND seq IN (`
	// Marking reads the rows to mark from a JSON array of [shard, seq] pairs
	// and joins each to the clustered key (eq_ref, forced): one statement for
	// the rows of every shard, and never a scan of the table, which the
	// optimizer picks for an IN list covering most of a small table (the
	// usual state of a trickle), and which at READ COMMITTED would wait for
	// every producer transaction with an uncommitted row.
	outboxMarked = ` JSON_TABLE(?, '$[*]' COLUMNS (d_shard SMALLINT UNSIGNED PATH '$[0]', d_seq BIGINT UNSIGNED PATH '$[1]')) d
STRAIGHT_JOIN ` + outboxTable + ` o FORCE INDEX (PRIMARY) ON o.shard = d.d_shard AND o.seq = d.d_seq`
	outboxDeliver = `DELETE o FROM` + outboxMarked
	// IGNORE: after a crash between copy and delete the row is sent again,
	// and its second copy is dropped.
	outboxArchive = `INSERT IGNORE INTO ` + archiveTable +
		` (seq, shard, id, topic, msg_key, value, headers, created_at, delivered_at)
SELECT o.seq, o.shard, o.id, o.topic, o.msg_key, o.value, o.headers, o.created_at, UTC_TIMESTAMP(6) FROM` + outboxMarked
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

// SingleRead implements SingleRead: each poll is one SELECT.
func (s *OutboxSource) SingleRead() bool { return true }

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
// safe side. It is in the server's system time zone whatever the session's
// (a DSN's time_zone, the server's default_time_zone), so both times are
// read in UTC: NOW(6) five hours behind trx_started settled the seqs of
// transactions still open. It needs the PROCESS privilege (MySQL and
// MariaDB alike).
//
// The oldest is taken among the caller's own and those that may hold a seq,
// leaving out the ones that cannot write (declared READ ONLY, or a SELECT in
// autocommit) and those between statements that have changed no row: a seq
// is taken by an INSERT under way (its table is in use) and then belongs to
// a row the transaction changed; a statement that failed gave its row up.
// A long report or a forgotten session on the same server would otherwise
// hold every shard's floor where it was when it began: each read then steps
// over every row delivered since, which purge, held back by the same
// transaction, keeps (at 1,000 msg/s, 32 to 179 pages a read over a minute).
const oldestTx = `SELECT UTC_TIMESTAMP(6), COALESCE(SUM(trx_mysql_thread_id = CONNECTION_ID()), 0),
  CONVERT_TZ(MIN(CASE WHEN trx_mysql_thread_id = CONNECTION_ID()
    OR (trx_is_read_only = 0 AND trx_autocommit_non_locking = 0 AND (trx_tables_in_use > 0 OR trx_rows_modified > 0))
    THEN trx_started END), 'SYSTEM', '+00:00')
FROM information_schema.innodb_trx`

// headQuery is how Head reads the newest seq at or above after: forwards
// from a seq the relay has seen (see outboxHeadFrom), from the end of the
// index at the first reading of all.
func headQuery(after int64) string {
	if after == 0 {
		return outboxHead
	}
	return outboxHeadFrom
}

// Head implements Seeker. It reads in a transaction of its own, which the
// list of running transactions must show (see oldestTx); when it does not,
// oldest is the Unix epoch, before any reading: nothing settles.
func (s *OutboxSource) Head(ctx context.Context, db *sql.DB, after int64) (int64, time.Time, time.Time, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, time.Time{}, time.Time{}, err
	}
	defer tx.Rollback()
	// The first read starts the transaction inside InnoDB.
	var found sql.NullInt64
	if err := sqlx.QueryRow(ctx, tx, headQuery(after), []any{after}, &found); err != nil {
		return 0, time.Time{}, time.Time{}, err
	}
	head := max(found.Int64, after)
	var at time.Time
	var self int
	var oldest sql.NullTime
	if err := sqlx.QueryRow(ctx, tx, oldestTx, nil, &at, &self, &oldest); err != nil {
		return 0, time.Time{}, time.Time{}, err
	}
	if self == 0 || !oldest.Valid {
		return head, at, time.Unix(0, 0).UTC(), nil
	}
	return head, at, oldest.Time, nil
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
	for _, pairs := range markPairs(rows) {
		if s.keep {
			if _, err := e.ExecContext(ctx, outboxArchive, pairs); err != nil {
				return err
			}
		}
		if _, err := e.ExecContext(ctx, outboxDeliver, pairs); err != nil {
			return err
		}
	}
	return nil
}

// SingleMark implements SingleMark: one DELETE for up to markChunk rows,
// unless delivered rows are archived first.
func (s *OutboxSource) SingleMark(n int) bool { return !s.keep && n <= markChunk }

// markChunk bounds the rows of one marking statement (about 20 bytes of
// JSON each, far below max_allowed_packet).
const markChunk = 8192

// markPairs returns rows as JSON arrays of [shard, seq] pairs in key order
// (so the join walks each shard's range forward), markChunk pairs each.
func markPairs(rows []Row) []string {
	keys := make([][2]int64, len(rows))
	for i, r := range rows {
		keys[i] = [2]int64{int64(r.Shard), r.Seq}
	}
	slices.SortFunc(keys, func(a, b [2]int64) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	var out []string
	for len(keys) > 0 {
		n := min(len(keys), markChunk)
		b := make([]byte, 0, 24*n)
		b = append(b, '[')
		for i, k := range keys[:n] {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			b = strconv.AppendInt(b, k[0], 10)
			b = append(b, ',')
			b = strconv.AppendInt(b, k[1], 10)
			b = append(b, ']')
		}
		out = append(out, string(append(b, ']')))
		keys = keys[n:]
	}
	return out
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
		err := sqlx.QueryRow(ctx, q, outboxBacklogLow, []any{shard, f}, &seq, &at)
		if errors.Is(err, sql.ErrNoRows) {
			lows[shard] = -1
			continue
		}
		if err != nil {
			return 0, time.Time{}, nil, err
		}
		lows[shard] = seq
		var top sql.NullInt64
		if err := sqlx.QueryRow(ctx, q, outboxBacklogHigh, []any{shard, seq}, &top); err != nil {
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
		if err := sqlx.QueryRow(ctx, q, outboxBacklogCount, []any{lo, hi}, &n); err != nil {
			return 0, time.Time{}, nil, err
		}
	}
	return n, oldest, lows, nil
}

// StrayShard implements Strays.
func (s *OutboxSource) StrayShard(ctx context.Context, q Querier, shards int) (int, error) {
	shard := -1
	err := sqlx.QueryRow(ctx, q, outboxStray, []any{shards}, &shard)
	if errors.Is(err, sql.ErrNoRows) {
		return -1, nil
	}
	return shard, err
}

// Newest implements Changes.
func (s *OutboxSource) Newest(ctx context.Context, q Querier) (int64, error) {
	var head sql.NullInt64
	err := sqlx.QueryRow(ctx, q, outboxHead, []any{0}, &head)
	return head.Int64, err
}

// The change probe asks about a gap of up to gapPoints seqs seq by seq, and
// about at most probePoints seqs so; larger gaps, and those past the
// budget, are ranges.
const (
	gapPoints   = 256
	probePoints = 4096
)

// arrivalsQuery is the change probe's statement and its arguments. A gap of
// up to gapPoints seqs is asked about seq by seq (seq IN): InnoDB stops a
// lookup of one value at the first entry past it, but reads a range of
// several values past its end for as long as the entries it meets are
// delete-marked, and below the newest rows the seq index holds one for
// every row delivered since purge last ran. At 1,000 msg/s from 32
// producers, each two-seq range walked to the live rows at the tail: 60 of
// them cost 27,000–37,000 buffer pool page accesses per probe (as single
// values: 120–800), a probe took 17 ms on average, and commit → read
// doubled. A larger gap (a producer's many-row transaction still open)
// stays one range.
func arrivalsQuery(after int64, gaps []SeqRange, limit int) (string, []any) {
	return arrivalsOf(outboxArrivals, after, gaps, limit)
}

// arrivalsOf is arrivalsQuery reading what selectAfter (a SELECT ending in
// WHERE seq > ?) selects.
func arrivalsOf(selectAfter string, after int64, gaps []SeqRange, limit int) (string, []any) {
	var b strings.Builder
	b.WriteString(selectAfter)
	args := []any{after}
	var points []any
	for _, g := range gaps {
		if n := int(g.To - g.From + 1); n <= gapPoints && len(points)+n <= probePoints {
			for seq := g.From; seq <= g.To; seq++ {
				points = append(points, seq)
			}
			continue
		}
		b.WriteString(" OR seq BETWEEN ? AND ?")
		args = append(args, g.From, g.To)
	}
	if len(points) > 0 {
		b.WriteString(" OR seq IN (?" + strings.Repeat(", ?", len(points)-1) + ")")
		args = append(args, points...)
	}
	b.WriteString(outboxArrivalsOrder)
	return b.String(), append(args, limit)
}

// Arrivals implements Changes.
func (s *OutboxSource) Arrivals(ctx context.Context, q Querier, after int64, gaps []SeqRange, limit int) ([]Arrival, error) {
	query, args := arrivalsQuery(after, gaps, limit)
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Arrival
	for rows.Next() {
		var a Arrival
		if err := rows.Scan(&a.Seq, &a.Shard); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// ArrivalRows implements Handover. Rows of shards other than those listed
// come without their keys, values and headers: with several relays, each
// one's probe reads every new row, and only its own shards' whole.
func (s *OutboxSource) ArrivalRows(ctx context.Context, q Querier, after int64, gaps []SeqRange, shards []int, limit Limit) ([]Row, error) {
	selectAfter := outboxArrivalRows
	if shards != nil {
		// Shard numbers, not user input: written into the statement.
		in := "FALSE"
		if len(shards) > 0 {
			list := make([]string, len(shards))
			for i, sh := range shards {
				list[i] = strconv.Itoa(sh)
			}
			in = "shard IN (" + strings.Join(list, ", ") + ")"
		}
		selectAfter = fmt.Sprintf(outboxArrivalRowsOf, in)
	}
	query, args := arrivalsOf(selectAfter, after, gaps, limit.Rows)
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return ScanRows(rows, limit.Bytes)
}

// Purge implements Purger: delete up to limit archived rows delivered
// before t.
func (s *OutboxSource) Purge(ctx context.Context, e Execer, t time.Time, limit int) (int64, error) {
	res, err := e.ExecContext(ctx, outboxPurge, sqlx.Time(t), limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
