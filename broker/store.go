package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/codec"
	"github.com/txmsg/txmsg/internal/sqlx"
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
	log          *slog.Logger
	policy       AddressPolicy
	rules        *addressRules
	prepares     batcher[*prepareCall]
	counts       map[string]preparedCount // see admit
	moves        batcher[*moveCall]
}

// StoreOption configures a Store.
type StoreOption func(*Store)

// WithShards sets the shard count messages are spread over by key (default
// 16); it must equal the relay engine's Config.Shards.
func WithShards(n int) StoreOption { return func(s *Store) { s.shards = n } }

// WithMaxValueBytes sets the largest message accepted, counted as the Kafka
// record it becomes (txmsg.RecordBytes; default txmsg.DefaultMaxValueBytes).
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

// WithStoreLogger sets the logger of the audit log: every change an Actor
// makes (commit, rollback, resolve, group registration, rotation and
// deletion) is logged at INFO with the actor, the id and the old and new
// state (default: discarded).
func WithStoreLogger(l *slog.Logger) StoreOption {
	return func(s *Store) {
		if l != nil {
			s.log = l
		}
	}
}

// WithAddressPolicy sets which check-back URLs may be registered (default:
// the zero AddressPolicy, which refuses loopback); the broker's Scanner must
// dial through the same policy.
func WithAddressPolicy(p AddressPolicy) StoreOption { return func(s *Store) { s.policy = p } }

// NewStore returns a Store on db, which must hold the migrated schema.
func NewStore(db *sql.DB, opts ...StoreOption) (*Store, error) {
	if db == nil {
		return nil, errors.New("broker: store: nil *sql.DB")
	}
	s := &Store{db: db, shards: DefaultShards, maxValue: txmsg.DefaultMaxValueBytes,
		checkTimeout: DefaultCheckTimeout, maxChecks: DefaultMaxChecks, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	rules, err := s.policy.rules()
	if err != nil {
		return nil, err
	}
	s.rules = rules
	s.counts = map[string]preparedCount{}
	s.prepares = batcher[*prepareCall]{run: s.prepareBatch, max: maxBatchCalls, writers: 1}
	s.moves = batcher[*moveCall]{run: s.moveBatch, max: maxBatchCalls, writers: 1}
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
	// check-back's commit, each with whether its group delivers in prepare
	// order and it has a key: then the commit makes it wait for the latest
	// earlier message of its topic and key still prepared, which
	// latestPrepared reads (see HalfSource). Like every selectTargets form,
	// it is a consistent read without locks; the conditional UPDATE then
	// decides, and the relay re-checks a row whose message it waited for
	// has left prepared.
	selectTargets = targetsCols + targetsOrdered + `FROM txmsg_half_messages h
` + targetsGroup + `WHERE h.id = ?`
	// selectTargetsBySeqs is selectTargets for a list of seqs, closed by the
	// caller with ")".
	selectTargetsBySeqs = targetsCols + targetsOrdered + `FROM txmsg_half_messages h
` + targetsGroup + `WHERE h.seq IN (`
	// selectTargetsByIDs reads the rows of a list of ids, closed by the
	// caller with ") ORDER BY h.seq", before a producer's commit: what each
	// will wait for comes in the same statement, from a subquery that reads
	// the key's prepared messages from the latest back to h.seq. A message
	// its producer commits right after preparing it is among the latest of
	// its key, so that is a few index entries and one round trip fewer than
	// latestPrepared; the check-back, which resolves the oldest first, uses
	// latestPrepared instead. The subquery is told its index (left to
	// choose, MariaDB may read every prepared message of the group), and so
	// is h, so that the ORDER BY never tempts it to walk the primary key
	// (the plans measured use the id index anyway).
	selectTargetsByIDs = targetsCols + targetsLatest + `FROM txmsg_half_messages h FORCE INDEX (txmsg_half_messages_id)
` + targetsGroup + `WHERE h.id IN (`
	// targetsCols, targetsOrdered or targetsLatest, and targetsGroup are
	// the parts of the selectTargets forms.
	targetsCols = `SELECT h.seq, h.state, h.shard, h.producer_group, h.id, h.topic, h.msg_key,
`
	targetsOrdered = `  COALESCE(g.delivery_order, ?) = ? AND COALESCE(h.msg_key, '') <> ''
`
	targetsLatest = `  CASE WHEN COALESCE(g.delivery_order, ?) = ? AND h.msg_key <> '' THEN
    (SELECT p.seq FROM txmsg_half_messages p FORCE INDEX (txmsg_half_messages_key)
     WHERE p.topic = h.topic AND p.msg_key = h.msg_key AND p.state = ? AND p.seq < h.seq
       AND p.producer_group = h.producer_group
     ORDER BY p.seq DESC LIMIT 1)
  END
`
	targetsGroup = `LEFT JOIN txmsg_producer_groups g ON g.producer_group = h.producer_group
`
	// latestPreparedOne is one row's part of latestPrepared's UNION ALL:
	// constant bounds make it a backward range read of the key index that
	// stops at the first match, however many messages of the key are
	// prepared before or after it. (A subquery correlated with h.seq uses
	// only the index's equality part: resolving thousands of one key's
	// messages oldest first, each read all those after it.)
	latestPreparedOne = `(SELECT ?, seq FROM txmsg_half_messages FORCE INDEX (txmsg_half_messages_key)
WHERE topic = ? AND msg_key = ? AND state = ? AND seq < ? AND producer_group = ?
ORDER BY seq DESC LIMIT 1)`
	transitionHalf = `UPDATE txmsg_half_messages
SET state = ?, resolved_at = UTC_TIMESTAMP(6), next_check_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6),
  reason = COALESCE(?, reason),
  waits_for = CASE seq`
	infoColumns = `seq, id, producer_group, topic, msg_key, state, checkback_url, check_timeout_ms, max_checks,
  check_count, last_check_result, last_check_error, reason, attempts, last_error, created_at, updated_at,
  next_check_at, last_check_at, resolved_at, delivered_at`
	selectInfo   = `SELECT ` + infoColumns + ` FROM txmsg_half_messages WHERE id = ? ORDER BY seq LIMIT 1`
	selectInfoIn = `SELECT ` + infoColumns + ` FROM txmsg_half_messages WHERE id = ? AND producer_group = ? ORDER BY seq LIMIT 1`
	// idShared finds a message of id in another group than the one given.
	idShared = `SELECT 1 FROM txmsg_half_messages WHERE id = ? AND producer_group <> ? LIMIT 1`
)

// Prepare stores a prepared half message and returns its id. The message is
// not delivered until Commit; if neither Commit nor Rollback comes, its
// producer is asked after the check timeout. Invalid requests fail with an
// error wrapping txmsg.ErrInvalidMessage, an id already used in the same
// topic with txmsg.ErrConflict. Ids compare byte for byte ("Order-1" and
// "order-1" are two ids), and one id may be prepared in several topics.
func (s *Store) Prepare(ctx context.Context, req halfmsg.PrepareRequest) (string, error) {
	return s.prepare(ctx, req, prepareRules{})
}

// prepareRules is what a prepare made through the API must also satisfy.
type prepareRules struct {
	// limit bounds the group's prepared messages, this one included (0:
	// none); past it, the error wraps errTooManyPrepared.
	limit int
}

// prepare is Prepare under rules. Concurrent prepares share one
// transaction (see prepareBatch): the prepare's durable commit is what a
// busy broker spends most time on.
func (s *Store) prepare(ctx context.Context, req halfmsg.PrepareRequest, rules prepareRules) (string, error) {
	c, err := s.prepareCall(req, rules)
	if err != nil {
		return "", err
	}
	if err := s.prepares.do(ctx, c); err != nil {
		return "", err
	}
	return c.id, nil
}

// prepareMany is prepare of each of reqs, queued together so that they share
// one batch when they fit; it returns each one's id or error, in order.
func (s *Store) prepareMany(ctx context.Context, reqs []halfmsg.PrepareRequest, rules prepareRules) ([]string, []error) {
	ids, errs := make([]string, len(reqs)), make([]error, len(reqs))
	var (
		calls []*prepareCall
		at    []int
	)
	for i, req := range reqs {
		c, err := s.prepareCall(req, rules)
		if err != nil {
			errs[i] = err
			continue
		}
		calls, at = append(calls, c), append(at, i)
	}
	if len(calls) == 0 {
		return ids, errs
	}
	for k, err := range s.prepares.doAll(ctx, calls) {
		if errs[at[k]] = err; err == nil {
			ids[at[k]] = calls[k].id
		}
	}
	return ids, errs
}

// prepareCall checks req and returns its call for the prepare batcher.
func (s *Store) prepareCall(req halfmsg.PrepareRequest, rules prepareRules) (*prepareCall, error) {
	m := &req.Message
	if err := halfmsg.ValidateGroup(req.ProducerGroup); err != nil {
		return nil, fmt.Errorf("broker: prepare: %w", err)
	}
	if err := m.Validate(s.maxValue); err != nil {
		return nil, fmt.Errorf("broker: prepare (topic %q): %w", m.Topic, err)
	}
	if req.CheckbackURL != "" {
		if err := s.rules.checkURL(req.CheckbackURL); err != nil {
			return nil, fmt.Errorf("broker: prepare: %w", err)
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
		return nil, fmt.Errorf("broker: prepare: %w: check_timeout %v: want 1ms to %v", txmsg.ErrInvalidMessage, timeout, MaxCheckTimeout)
	}
	if maxChecks < 1 || maxChecks > MaxMaxChecks {
		return nil, fmt.Errorf("broker: prepare: %w: max_checks %d: want 1 to %d", txmsg.ErrInvalidMessage, maxChecks, MaxMaxChecks)
	}
	id := m.ID
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("broker: prepare: generate id: %w", err)
		}
		id = u.String()
	}
	hdr, err := codec.EncodeHeaders(m.Headers)
	if err != nil {
		return nil, fmt.Errorf("broker: prepare %s: %w", id, err)
	}
	c := &prepareCall{id: id, topic: m.Topic, group: req.ProducerGroup, limit: rules.limit,
		size: len(m.Value) + len(m.Key) + len(hdr),
		args: []any{id, txmsg.Shard(m.Key, id, s.shards), halfmsg.StatePrepared,
			req.ProducerGroup, m.Topic, m.Key, m.Value, hdr, nullString(req.CheckbackURL),
			timeout.Milliseconds(), maxChecks, timeout.Microseconds()}}
	return c, nil
}

// Commit makes a prepared message deliverable and returns its state. It is
// idempotent: committing a committed, delivered or dead-lettered message
// returns its state and changes nothing. A rolled back or discarded message
// fails with txmsg.ErrConflict, an unknown id with txmsg.ErrNotFound. It is
// CommitAs by the operator.
//
// Commit, Rollback and Resolve act on every message prepared under id (one
// per topic: the fan-out of one local transaction). Unless its producer
// group delivers in OrderCommit, a committed message with a key is delivered
// only after the earlier prepared messages of its topic and key have left
// prepared (see Order).
func (s *Store) Commit(ctx context.Context, id string) (halfmsg.State, error) {
	return s.CommitAs(ctx, Actor{}, id)
}

// CommitAs is Commit by a: a group's commit of another group's message
// fails with txmsg.ErrNotFound, as an unknown id, and changes nothing.
func (s *Store) CommitAs(ctx context.Context, a Actor, id string) (halfmsg.State, error) {
	return s.transition(ctx, a, id, halfmsg.StateCommitted, ByProducer, "", halfmsg.StatePrepared)
}

// Rollback drops a prepared message for good and returns its state. It is
// idempotent; a committed, delivered or discarded message fails with
// txmsg.ErrConflict, an unknown id with txmsg.ErrNotFound. It is RollbackAs
// by the operator.
func (s *Store) Rollback(ctx context.Context, id string) (halfmsg.State, error) {
	return s.RollbackAs(ctx, Actor{}, id)
}

// RollbackAs is Rollback by a: a group's rollback of another group's
// message fails with txmsg.ErrNotFound, as an unknown id, and changes
// nothing.
func (s *Store) RollbackAs(ctx context.Context, a Actor, id string) (halfmsg.State, error) {
	return s.transition(ctx, a, id, halfmsg.StateRolledBack, ByProducer, "", halfmsg.StatePrepared)
}

// Resolve is the operator's decision on a discarded (or still prepared)
// message: commit delivers it, rollback drops it. It is idempotent like
// Commit and Rollback; reason is stored with the message. It is ResolveAs by
// the operator.
func (s *Store) Resolve(ctx context.Context, id string, commit bool, reason string) (halfmsg.State, error) {
	return s.ResolveAs(ctx, Actor{}, id, commit, reason)
}

// ResolveAs is Resolve by a, which must be an operator (a group fails with
// txmsg.ErrForbidden): a is named in the audit log.
func (s *Store) ResolveAs(ctx context.Context, a Actor, id string, commit bool, reason string) (halfmsg.State, error) {
	if !a.isOperator() {
		return 0, fmt.Errorf("broker: resolve %s: %w: only the operator resolves messages", id, txmsg.ErrForbidden)
	}
	to := halfmsg.StateRolledBack
	if commit {
		to = halfmsg.StateCommitted
	}
	if reason == "" {
		reason = "resolved " + to.String() + " by an operator"
	}
	return s.transition(ctx, a, id, to, ByOperator, sqlx.Truncate(reason, 1024), halfmsg.StatePrepared, halfmsg.StateDiscarded)
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
	id    string
	seq   int64
	state halfmsg.State
	shard int
	group string
	topic string
	key   []byte
	// ordered says a commit makes the row wait for the latest earlier
	// message of its topic and key still prepared: waitsFor.
	ordered  bool
	waitsFor sql.NullInt64
}

// scanTargets reads the rows of a selectTargets form, given the form's own
// arguments, then, unless the form read it (latest: selectTargetsByIDs),
// what each waits for (see latestPrepared).
func scanTargets(ctx context.Context, q relay.Querier, query string, latest bool, own ...any) ([]target, error) {
	args := []any{halfmsg.OrderPrepare, halfmsg.OrderPrepare}
	if latest {
		args = append(args, halfmsg.StatePrepared)
	}
	rows, err := q.QueryContext(ctx, query, append(args, own...)...)
	if err != nil {
		return nil, err
	}
	var out []target
	for rows.Next() {
		var t target
		last := any(&t.ordered)
		if latest {
			last = &t.waitsFor
		}
		if err := rows.Scan(&t.seq, &t.state, &t.shard, &t.group, &t.id, &t.topic, &t.key, last); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, t)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil || latest {
		return out, err
	}
	return out, latestPrepared(ctx, q, out)
}

// latestPrepared sets the waitsFor of each ordered row of ts: the seq of
// the latest earlier message of its topic, key and group that is still
// prepared, if any. One statement, a few index entries per row however
// many messages the key has prepared.
func latestPrepared(ctx context.Context, q relay.Querier, ts []target) error {
	var (
		query strings.Builder
		args  []any
	)
	for i, t := range ts {
		if !t.ordered {
			continue
		}
		if len(args) > 0 {
			query.WriteString(" UNION ALL ")
		}
		query.WriteString(latestPreparedOne)
		args = append(args, i, t.topic, t.key, halfmsg.StatePrepared, t.seq, t.group)
	}
	if len(args) == 0 {
		return nil
	}
	rows, err := q.QueryContext(ctx, query.String(), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			i   int
			seq int64
		)
		if err := rows.Scan(&i, &seq); err != nil {
			return err
		}
		ts[i].waitsFor = sql.NullInt64{Int64: seq, Valid: true}
	}
	return rows.Err()
}

// targets reads the rows of id, one per topic, in seq order; only that of
// topic when topic is not empty.
func targets(ctx context.Context, q relay.Querier, id, topic string) ([]target, error) {
	query, args := selectTargets, []any{id}
	if topic != "" {
		query, args = query+" AND h.topic = ?", append(args, topic)
	}
	return scanTargets(ctx, q, query+" ORDER BY h.seq", false, args...)
}

// transition moves every row of id (one per topic) that is in one of from
// to `to`, with one conditional UPDATE shared with the transitions asked
// at the same time (see moveBatch); a commit records in each row the
// message it waits for. A group moves only its own rows: another group's
// message fails with ErrNotFound, as an unknown id. When no
// row is in a from state, their states tell why: already there (idempotent
// success) or illegal (ErrConflict). A row that leaves a from state between
// the read and the UPDATE can only have moved forward, so one more read
// suffices; the loop is a guard. Every change goes to the audit log.
func (s *Store) transition(ctx context.Context, a Actor, id string, to halfmsg.State, by, reason string, from ...halfmsg.State) (halfmsg.State, error) {
	for range 3 {
		c := newMoveCall(a, by, id, to, reason, from...)
		if err := s.moves.do(ctx, c); err != nil {
			return 0, fmt.Errorf("broker: %s %s: %w", verb(to), id, err)
		}
		if st, done, err := s.settle(c); done {
			return st, err
		}
	}
	return 0, fmt.Errorf("broker: %s %s: state keeps changing", verb(to), id)
}

func newMoveCall(a Actor, by, id string, to halfmsg.State, reason string, from ...halfmsg.State) *moveCall {
	return &moveCall{id: id, actor: a, by: by, group: a.Group, to: to, reason: reason, f1: from[0], f2: from[len(from)-1]}
}

// settle reports what c's batch did (see transition): the state and error
// to answer, or done false when a row left its from state meanwhile and the
// transition must read again. The batch already audited what it moved.
func (s *Store) settle(c *moveCall) (halfmsg.State, bool, error) {
	id, to := c.id, c.to
	if !c.found {
		return 0, true, fmt.Errorf("broker: %s %s: %w", verb(to), id, txmsg.ErrNotFound)
	}
	if len(c.ts) == 0 {
		// Another group's message: answered as an unknown id, so that a
		// group learns nothing of another's ids.
		return 0, true, fmt.Errorf("broker: %s %s: %w", verb(to), id, txmsg.ErrNotFound)
	}
	if len(c.moved) == 0 {
		for _, t := range c.ts {
			if !reached(t.state, to) {
				return t.state, true, fmt.Errorf("broker: %s %s: %w: message is %s", verb(to), id, txmsg.ErrConflict, t.state)
			}
		}
		return c.ts[0].state, true, nil
	}
	if int(c.n) == len(c.moved) {
		return to, true, nil
	}
	return 0, false, nil
}

// endMany commits (commit[i]) or rolls back message ids[i] for a, as
// CommitAs and RollbackAs, with the calls queued together so that they
// share one batch when they fit; it returns each one's state or error, in
// order.
func (s *Store) endMany(ctx context.Context, a Actor, ids []string, commit []bool) ([]halfmsg.State, []error) {
	sts, errs := make([]halfmsg.State, len(ids)), make([]error, len(ids))
	calls := make([]*moveCall, len(ids))
	for i, id := range ids {
		to := halfmsg.StateRolledBack
		if commit[i] {
			to = halfmsg.StateCommitted
		}
		calls[i] = newMoveCall(a, ByProducer, id, to, "", halfmsg.StatePrepared)
	}
	for i, err := range s.moves.doAll(ctx, calls) {
		c := calls[i]
		if err != nil {
			errs[i] = fmt.Errorf("broker: %s %s: %w", verb(c.to), c.id, err)
			continue
		}
		st, done, err := s.settle(c)
		if !done {
			// A row moved meanwhile: read again alone, as transition does.
			st, err = s.transition(ctx, a, c.id, c.to, ByProducer, "", halfmsg.StatePrepared)
		}
		sts[i], errs[i] = st, err
	}
	return sts, errs
}

// moved reports n rows of id moved to `to` by a: hooks, the audit log, and
// the relay's wake-up for committed rows.
func (s *Store) moved(ctx context.Context, a Actor, id string, to halfmsg.State, by string, ts []target, n int64) {
	for range n {
		s.metrics.Resolved(to, by)
	}
	s.log.InfoContext(ctx, "broker: audit: half message "+to.String(), slog.String("actor", a.String()),
		slog.String("msg_id", id), slog.String("from", ts[0].state.String()), slog.String("to", to.String()),
		slog.Int64("messages", n))
	if to == halfmsg.StateCommitted && s.onCommit != nil {
		for _, t := range ts {
			s.onCommit(t.shard)
		}
	}
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

// getIn is Get of id among the messages of producer group: another group's
// message of that id is not found.
func (s *Store) getIn(ctx context.Context, id, group string) (halfmsg.Info, error) {
	info, err := scanInfo(s.db.QueryRowContext(ctx, selectInfoIn, id, group))
	if errors.Is(err, sql.ErrNoRows) {
		return halfmsg.Info{}, fmt.Errorf("broker: get %s: %w", id, txmsg.ErrNotFound)
	}
	if err != nil {
		return halfmsg.Info{}, fmt.Errorf("broker: get %s: %w", id, err)
	}
	return info, nil
}

// sharedID reports whether a producer group other than group has a message
// of id (in another topic: groups may use the same ids).
func (s *Store) sharedID(ctx context.Context, id, group string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, idShared, id, group).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("broker: checks of %s: %w", id, err)
	}
	return true, nil
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

// wait fails the calls made from now on and returns once no group-commit
// batch runs.
func (s *Store) wait() {
	s.prepares.close()
	s.moves.close()
}

// PreparedBacklog counts prepared messages and returns the creation time of
// the oldest (zero when there is none). The count is exact up to 10,000;
// above, an upper bound whose reading costs the same whatever the backlog.
func (s *Store) PreparedBacklog(ctx context.Context) (int64, time.Time, error) {
	n, oldest, err := stateBacklog(ctx, s.db, halfmsg.StatePrepared)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("broker: prepared backlog: %w", err)
	}
	return n, oldest, nil
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
