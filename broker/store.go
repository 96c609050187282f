package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/codec"
	"github.com/txmsg/txmsg/internal/sqlx/mysqlx"
	"github.com/txmsg/txmsg/relay"
)

// Limits and defaults of the store.
const (
	// DefaultShards is the shard count (it must equal the relay's).
	DefaultShards = 16
	// DefaultCheckTimeout is the delay before the first check-back.
	DefaultCheckTimeout = 6 * time.Second
	// DefaultMaxChecks is how many check-backs a message gets.
	DefaultMaxChecks = 15
	// MaxCheckTimeout is the longest per-message check timeout.
	MaxCheckTimeout = 24 * time.Hour
	// MaxMaxChecks is the most checks a message may ask for.
	MaxMaxChecks = 1000
)

// Who resolved a message, for ResolvedHook.
const (
	ByProducer  = "producer"
	ByCheckback = "checkback"
	ByOperator  = "operator"
)

// Store is the half-message state machine on MySQL. It holds no connection
// of its own and is safe for concurrent use. All times come from the
// database clock, so broker instances need not agree on theirs.
type Store struct {
	db           *sql.DB
	shards       int
	maxValue     int
	checkTimeout time.Duration
	maxChecks    int
	metrics      hooks
	onCommit     func(shard int)
}

// StoreOption configures a Store.
type StoreOption func(*Store)

// WithShards sets the shard count messages are spread over by key (default
// 16); it must equal the relay engine's Config.Shards.
func WithShards(n int) StoreOption { return func(s *Store) { s.shards = n } }

// WithMaxValueBytes sets the largest value accepted (default 1 MiB).
func WithMaxValueBytes(n int) StoreOption { return func(s *Store) { s.maxValue = n } }

// WithCheckTimeout sets the default delay before the first check-back
// (default 6s).
func WithCheckTimeout(d time.Duration) StoreOption { return func(s *Store) { s.checkTimeout = d } }

// WithMaxChecks sets the default number of check-backs (default 15).
func WithMaxChecks(n int) StoreOption { return func(s *Store) { s.maxChecks = n } }

// WithOnCommit sets a function called with a message's shard after the
// message is committed by Commit or Resolve (default: none). The broker
// daemon uses it to wake the relay's worker for that shard; it must not block.
func WithOnCommit(fn func(shard int)) StoreOption { return func(s *Store) { s.onCommit = fn } }

// WithStoreHooks adds measurement hooks (default: none); see Hook.
func WithStoreHooks(hs ...Hook) StoreOption {
	return func(s *Store) { s.metrics = append(s.metrics, hs...) }
}

// NewStore returns a Store on db, which must hold the migrated schema.
func NewStore(db *sql.DB, opts ...StoreOption) (*Store, error) {
	if db == nil {
		return nil, errors.New("broker: store: nil *sql.DB")
	}
	s := &Store{db: db, shards: DefaultShards, maxValue: txmsg.DefaultMaxValueBytes,
		checkTimeout: DefaultCheckTimeout, maxChecks: DefaultMaxChecks}
	for _, o := range opts {
		o(s)
	}
	switch {
	case s.shards < 1 || s.shards > 4096:
		return nil, fmt.Errorf("broker: shards %d: want 1 to 4096", s.shards)
	case s.maxValue < 1:
		return nil, fmt.Errorf("broker: max value bytes %d: want at least 1", s.maxValue)
	case s.checkTimeout < time.Millisecond || s.checkTimeout > MaxCheckTimeout:
		return nil, fmt.Errorf("broker: check timeout %v: want 1ms to %v", s.checkTimeout, MaxCheckTimeout)
	case s.maxChecks < 1 || s.maxChecks > MaxMaxChecks:
		return nil, fmt.Errorf("broker: max checks %d: want 1 to %d", s.maxChecks, MaxMaxChecks)
	}
	return s, nil
}

const (
	insertHalf = `INSERT INTO txmsg_half_messages
  (id, shard, state, producer_group, topic, msg_key, value, headers, checkback_url,
   check_timeout_ms, max_checks, next_check_at, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))`
	// selectTargets reads the rows of one id (one per topic) before a
	// transition, each with the seq of the latest earlier message of its
	// topic and key that is still prepared, when the row has a key and its
	// group delivers in prepare order: what a commit makes the row wait for
	// (see HalfSource). It is a consistent read without locks; the
	// conditional UPDATE then decides, and the relay re-checks a row whose
	// message it waited for has left prepared.
	selectTargets = `SELECT h.seq, h.state, h.shard,
  CASE WHEN COALESCE(g.delivery_order, ?) = ? AND h.msg_key <> '' THEN
    (SELECT MAX(p.seq) FROM txmsg_half_messages p
     WHERE p.topic = h.topic AND p.msg_key = h.msg_key AND p.state = ? AND p.seq < h.seq)
  END
FROM txmsg_half_messages h
LEFT JOIN txmsg_producer_groups g ON g.producer_group = h.producer_group
WHERE h.id = ?`
	transitionHalf = `UPDATE txmsg_half_messages
SET state = ?, resolved_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6), reason = COALESCE(?, reason),
  waits_for = CASE seq`
	infoColumns = `seq, id, producer_group, topic, msg_key, state, checkback_url, check_timeout_ms, max_checks,
  check_count, last_check_result, last_check_error, reason, attempts, last_error, created_at, updated_at,
  next_check_at, last_check_at, resolved_at, delivered_at`
	selectInfo  = `SELECT ` + infoColumns + ` FROM txmsg_half_messages WHERE id = ? ORDER BY seq LIMIT 1`
	upsertGroup = `INSERT INTO txmsg_producer_groups (producer_group, checkback_url, delivery_order, updated_at)
VALUES (?, ?, ?, UTC_TIMESTAMP(6))
ON DUPLICATE KEY UPDATE checkback_url = VALUES(checkback_url), delivery_order = VALUES(delivery_order),
  updated_at = VALUES(updated_at)`
	selectGroup     = `SELECT checkback_url, delivery_order FROM txmsg_producer_groups WHERE producer_group = ?`
	preparedBacklog = `SELECT COUNT(*), MIN(created_at) FROM txmsg_half_messages WHERE state = ?`
)

// Prepare stores a prepared half message and returns its id. The message is
// not delivered until Commit; if neither Commit nor Rollback comes, its
// producer is asked after the check timeout. Invalid requests fail with an
// error wrapping txmsg.ErrInvalidMessage, an id already used in the same
// topic with txmsg.ErrConflict. Ids compare byte for byte ("Order-1" and
// "order-1" are two ids), and one id may be prepared in several topics.
func (s *Store) Prepare(ctx context.Context, req halfmsg.PrepareRequest) (string, error) {
	m := &req.Message
	if err := halfmsg.ValidateGroup(req.ProducerGroup); err != nil {
		return "", fmt.Errorf("broker: prepare: %w", err)
	}
	if err := m.Validate(s.maxValue); err != nil {
		return "", fmt.Errorf("broker: prepare (topic %q): %w", m.Topic, err)
	}
	if req.CheckbackURL != "" {
		if err := halfmsg.ValidateCheckbackURL(req.CheckbackURL); err != nil {
			return "", fmt.Errorf("broker: prepare: %w", err)
		}
	}
	timeout, maxChecks := req.CheckTimeout, req.MaxChecks
	if timeout == 0 {
		timeout = s.checkTimeout
	}
	if maxChecks == 0 {
		maxChecks = s.maxChecks
	}
	if timeout < time.Millisecond || timeout > MaxCheckTimeout {
		return "", fmt.Errorf("broker: prepare: %w: check_timeout %v: want 1ms to %v", txmsg.ErrInvalidMessage, timeout, MaxCheckTimeout)
	}
	if maxChecks < 1 || maxChecks > MaxMaxChecks {
		return "", fmt.Errorf("broker: prepare: %w: max_checks %d: want 1 to %d", txmsg.ErrInvalidMessage, maxChecks, MaxMaxChecks)
	}
	id := m.ID
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return "", fmt.Errorf("broker: prepare: generate id: %w", err)
		}
		id = u.String()
	}
	hdr, err := codec.EncodeHeaders(m.Headers)
	if err != nil {
		return "", fmt.Errorf("broker: prepare %s: %w", id, err)
	}
	_, err = s.db.ExecContext(ctx, insertHalf, id, txmsg.Shard(m.Key, id, s.shards), halfmsg.StatePrepared,
		req.ProducerGroup, m.Topic, m.Key, m.Value, hdr, nullString(req.CheckbackURL),
		timeout.Milliseconds(), maxChecks, timeout.Microseconds())
	if err != nil {
		if mysqlx.IsDuplicate(err) {
			return "", fmt.Errorf("broker: prepare: %w: id %s already exists in topic %s", txmsg.ErrConflict, id, m.Topic)
		}
		return "", fmt.Errorf("broker: prepare %s: %w", id, err)
	}
	s.metrics.Prepared()
	return id, nil
}

// Commit makes a prepared message deliverable and returns its state. It is
// idempotent: committing a committed, delivered or dead-lettered message
// returns its state and changes nothing. A rolled back or discarded message
// fails with txmsg.ErrConflict, an unknown id with txmsg.ErrNotFound.
//
// Commit, Rollback and Resolve act on every message prepared under id (one
// per topic: the fan-out of one local transaction). Unless its producer
// group delivers in OrderCommit, a committed message with a key is delivered
// only after the earlier prepared messages of its topic and key have left
// prepared (see Order).
func (s *Store) Commit(ctx context.Context, id string) (halfmsg.State, error) {
	return s.transition(ctx, id, halfmsg.StateCommitted, ByProducer, "", halfmsg.StatePrepared)
}

// Rollback drops a prepared message for good and returns its state. It is
// idempotent; a committed, delivered or discarded message fails with
// txmsg.ErrConflict, an unknown id with txmsg.ErrNotFound.
func (s *Store) Rollback(ctx context.Context, id string) (halfmsg.State, error) {
	return s.transition(ctx, id, halfmsg.StateRolledBack, ByProducer, "", halfmsg.StatePrepared)
}

// Resolve is the operator's decision on a discarded (or still prepared)
// message: commit delivers it, rollback drops it. It is idempotent like
// Commit and Rollback; reason is stored with the message.
func (s *Store) Resolve(ctx context.Context, id string, commit bool, reason string) (halfmsg.State, error) {
	to := halfmsg.StateRolledBack
	if commit {
		to = halfmsg.StateCommitted
	}
	if reason == "" {
		reason = "resolved " + to.String() + " by an operator"
	}
	return s.transition(ctx, id, to, ByOperator, truncate(reason, 1024), halfmsg.StatePrepared, halfmsg.StateDiscarded)
}

// reached says whether a message in state cur has already done what a
// transition to `to` asks.
func reached(cur, to halfmsg.State) bool {
	if to == halfmsg.StateCommitted {
		return cur == halfmsg.StateCommitted || cur == halfmsg.StateDelivered || cur == halfmsg.StateDead
	}
	return cur == to
}

// target is one row of an id before a transition.
type target struct {
	seq   int64
	state halfmsg.State
	shard int
	// waitsFor is what the row waits for once committed (see selectTargets).
	waitsFor sql.NullInt64
}

// targets reads the rows of id, one per topic, in seq order; only that of
// topic when topic is not empty.
func targets(ctx context.Context, q relay.Querier, id, topic string) ([]target, error) {
	query, args := selectTargets, []any{halfmsg.OrderPrepare, halfmsg.OrderPrepare, halfmsg.StatePrepared, id}
	if topic != "" {
		query, args = query+" AND h.topic = ?", append(args, topic)
	}
	rows, err := q.QueryContext(ctx, query+" ORDER BY h.seq", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []target
	for rows.Next() {
		var t target
		if err := rows.Scan(&t.seq, &t.state, &t.shard, &t.waitsFor); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// transition moves every row of id (one per topic) that is in one of from
// to `to`, with one conditional UPDATE; a commit records in each row the
// message it waits for. When no row is in a from state, their states tell
// why: already there (idempotent success) or illegal (ErrConflict). A row
// that leaves a from state between the read and the UPDATE can only have
// moved forward, so one more read suffices; the loop is a guard.
func (s *Store) transition(ctx context.Context, id string, to halfmsg.State, by, reason string, from ...halfmsg.State) (halfmsg.State, error) {
	f1, f2 := from[0], from[len(from)-1]
	for range 3 {
		ts, err := targets(ctx, s.db, id, "")
		if err != nil {
			return 0, fmt.Errorf("broker: %s %s: read state: %w", verb(to), id, err)
		}
		if len(ts) == 0 {
			return 0, fmt.Errorf("broker: %s %s: %w", verb(to), id, txmsg.ErrNotFound)
		}
		var (
			move  strings.Builder
			in    []any
			args  = []any{to, nullString(reason)}
			moved []target
		)
		for _, t := range ts {
			if t.state != f1 && t.state != f2 {
				continue
			}
			waits := t.waitsFor
			if to != halfmsg.StateCommitted {
				waits = sql.NullInt64{}
			}
			move.WriteString(" WHEN ? THEN ?")
			args = append(args, t.seq, waits)
			in = append(in, t.seq)
			moved = append(moved, t)
		}
		if len(moved) == 0 {
			for _, t := range ts {
				if !reached(t.state, to) {
					return t.state, fmt.Errorf("broker: %s %s: %w: message is %s", verb(to), id, txmsg.ErrConflict, t.state)
				}
			}
			return ts[0].state, nil
		}
		q := transitionHalf + move.String() + " END WHERE state IN (?, ?) AND seq IN (" +
			strings.Repeat("?,", len(in)-1) + "?)"
		res, err := s.db.ExecContext(ctx, q, append(append(args, f1, f2), in...)...)
		if err != nil {
			return 0, fmt.Errorf("broker: %s %s: %w", verb(to), id, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("broker: %s %s: %w", verb(to), id, err)
		}
		for range n {
			s.metrics.Resolved(to, by)
		}
		if n > 0 && to == halfmsg.StateCommitted && s.onCommit != nil {
			for _, t := range moved {
				s.onCommit(t.shard)
			}
		}
		if int(n) == len(moved) {
			return to, nil
		}
	}
	return 0, fmt.Errorf("broker: %s %s: state keeps changing", verb(to), id)
}

func verb(to halfmsg.State) string {
	if to == halfmsg.StateCommitted {
		return "commit"
	}
	return "roll back"
}

// Get returns what the store knows about id (the first one prepared when id
// names messages in several topics; List shows them all), or an error
// wrapping txmsg.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (halfmsg.Info, error) {
	info, err := scanInfo(s.db.QueryRowContext(ctx, selectInfo, id))
	if errors.Is(err, sql.ErrNoRows) {
		return halfmsg.Info{}, fmt.Errorf("broker: get %s: %w", id, txmsg.ErrNotFound)
	}
	if err != nil {
		return halfmsg.Info{}, fmt.Errorf("broker: get %s: %w", id, err)
	}
	return info, nil
}

// List returns one page of messages matching f in Seq order, and the cursor
// of the next page (0 when this page is the last).
func (s *Store) List(ctx context.Context, f halfmsg.Filter) ([]halfmsg.Info, int64, error) {
	if f.Limit <= 0 {
		f.Limit = halfmsg.DefaultListLimit
	}
	if f.Limit > halfmsg.MaxListLimit {
		f.Limit = halfmsg.MaxListLimit
	}
	var q strings.Builder
	q.WriteString("SELECT " + infoColumns + " FROM txmsg_half_messages WHERE seq > ?")
	args := []any{f.After}
	if f.State != 0 {
		q.WriteString(" AND state = ?")
		args = append(args, f.State)
	}
	if f.ProducerGroup != "" {
		q.WriteString(" AND producer_group = ?")
		args = append(args, f.ProducerGroup)
	}
	q.WriteString(" ORDER BY seq LIMIT ?")
	args = append(args, f.Limit+1)
	rows, err := s.db.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("broker: list: %w", err)
	}
	defer rows.Close()
	var out []halfmsg.Info
	for rows.Next() {
		info, err := scanInfo(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("broker: list: %w", err)
		}
		out = append(out, info)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("broker: list: %w", err)
	}
	var next int64
	if len(out) > f.Limit {
		out = out[:f.Limit]
		next = out[len(out)-1].Seq
	}
	return out, next, nil
}

// SetGroup registers (or replaces) the check-back URL and the options of a
// producer group; an option left out takes its default. Group names compare
// byte for byte: "Shop2" and "shop2" are two groups.
func (s *Store) SetGroup(ctx context.Context, group, checkbackURL string, opts ...halfmsg.GroupOption) error {
	g := halfmsg.Group{CheckbackURL: checkbackURL, Order: halfmsg.OrderPrepare}
	for _, o := range opts {
		o(&g)
	}
	if err := halfmsg.ValidateGroup(group); err != nil {
		return fmt.Errorf("broker: set group: %w", err)
	}
	if err := halfmsg.ValidateCheckbackURL(g.CheckbackURL); err != nil {
		return fmt.Errorf("broker: set group %s: %w", group, err)
	}
	if !g.Order.Valid() {
		return fmt.Errorf("broker: set group %s: %w: delivery order %d: want prepare or commit", group, txmsg.ErrInvalidMessage, uint8(g.Order))
	}
	if _, err := s.db.ExecContext(ctx, upsertGroup, group, g.CheckbackURL, g.Order); err != nil {
		return fmt.Errorf("broker: set group %s: %w", group, err)
	}
	return nil
}

// Group returns the registration of group, or an error wrapping
// txmsg.ErrNotFound.
func (s *Store) Group(ctx context.Context, group string) (halfmsg.Group, error) {
	var g halfmsg.Group
	err := s.db.QueryRowContext(ctx, selectGroup, group).Scan(&g.CheckbackURL, &g.Order)
	if errors.Is(err, sql.ErrNoRows) {
		return halfmsg.Group{}, fmt.Errorf("broker: group %s: %w", group, txmsg.ErrNotFound)
	}
	if err != nil {
		return halfmsg.Group{}, fmt.Errorf("broker: group %s: %w", group, err)
	}
	return g, nil
}

// GroupURL returns the check-back URL registered for group, or an error
// wrapping txmsg.ErrNotFound.
func (s *Store) GroupURL(ctx context.Context, group string) (string, error) {
	g, err := s.Group(ctx, group)
	return g.CheckbackURL, err
}

// PreparedBacklog counts prepared messages and returns the creation time of
// the oldest (zero when there is none).
func (s *Store) PreparedBacklog(ctx context.Context) (int64, time.Time, error) {
	var (
		n      int64
		oldest sql.NullTime
	)
	if err := s.db.QueryRowContext(ctx, preparedBacklog, halfmsg.StatePrepared).Scan(&n, &oldest); err != nil {
		return 0, time.Time{}, fmt.Errorf("broker: prepared backlog: %w", err)
	}
	return n, oldest.Time, nil
}

type rowScanner interface {
	Scan(dest ...any) error
}

func scanInfo(r rowScanner) (halfmsg.Info, error) {
	var (
		i                                         halfmsg.Info
		url, lcr, lce, reason, lastErr            sql.NullString
		timeoutMS                                 int64
		nextCheck, lastCheck, resolved, delivered sql.NullTime
	)
	err := r.Scan(&i.Seq, &i.ID, &i.ProducerGroup, &i.Topic, &i.Key, &i.State, &url, &timeoutMS, &i.MaxChecks,
		&i.CheckCount, &lcr, &lce, &reason, &i.Attempts, &lastErr, &i.CreatedAt, &i.UpdatedAt,
		&nextCheck, &lastCheck, &resolved, &delivered)
	if err != nil {
		return halfmsg.Info{}, err
	}
	i.CheckbackURL, i.LastCheckResult, i.LastCheckError = url.String, lcr.String, lce.String
	i.Reason, i.LastError = reason.String, lastErr.String
	i.CheckTimeout = time.Duration(timeoutMS) * time.Millisecond
	i.NextCheckAt, i.LastCheckAt, i.ResolvedAt, i.DeliveredAt = nextCheck.Time, lastCheck.Time, resolved.Time, delivered.Time
	if i.State != halfmsg.StatePrepared {
		i.NextCheckAt = time.Time{}
	}
	return i, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
