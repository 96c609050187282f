package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/sqlx"
	"github.com/txmsg/txmsg/internal/sqlx/mysqlx"
)

// Bounds of one group-commit batch.
const (
	// maxBatchCalls is the most calls one batch serves; the producers that
	// wait at once on a busy broker are in the tens.
	maxBatchCalls = 128
	// maxInsertBytes bounds one multi-row INSERT's values, keys and headers,
	// far below MySQL's smallest usual max_allowed_packet (16 MiB); a message
	// bigger than it goes alone.
	maxInsertBytes = 1 << 20
	// batchAttempts is how often a batch runs when InnoDB gives up on it for
	// a deadlock or a lock wait timeout (it did nothing wrong).
	batchAttempts = 3
)

// insertHalfRow is one row of insertHalf's VALUES.
const insertHalfRow = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))`

// prepareCall is one Prepare waiting for its batch.
type prepareCall struct {
	call
	id, topic, group string
	// limit bounds the group's prepared messages, this one included (0: no
	// bound).
	limit int
	// admitted is set when admit gave the call room under its group's
	// bound.
	admitted bool
	args     []any // insertHalf's arguments
	size     int
}

// moveCall is one transition waiting for its batch: move the rows of id
// that are in f1 or f2 to `to`.
type moveCall struct {
	call
	actor  Actor
	by     string // ByProducer, ByOperator...: who decided, for the audit
	id     string
	group  string // the acting group; empty for the operator
	to     halfmsg.State
	reason string
	f1, f2 halfmsg.State
	// Set when err is nil:
	found bool     // id names a message
	ts    []target // its rows the actor may move, in seq order
	moved []target // those of ts that were in f1 or f2
	n     int64    // how many of moved this batch moved
}

// dbtx is *sql.DB or *sql.Tx.
type dbtx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// runBatch runs fn in one transaction, again when InnoDB gave up on it for
// a deadlock or a lock wait timeout. A batch of one call runs fn on the
// pool instead: its one write commits by itself, which saves the BEGIN and
// COMMIT round trips when the broker is not busy, and runs again alike (a
// statement InnoDB gave up on did nothing).
func (s *Store) runBatch(ctx context.Context, calls int, fn func(dbtx) error) error {
	return again(func() error {
		if calls == 1 {
			return fn(s.db)
		}
		return sqlx.RunInTx(ctx, s.db, nil, func(tx *sql.Tx) error { return fn(tx) })
	})
}

// exec runs one statement that commits by itself, again when InnoDB gave up
// on it for a deadlock or a lock wait timeout: under load, a prepare's
// INSERT and a transition's UPDATE of the same table can deadlock, and a
// caller must not see that as a failure of its call.
func (s *Store) exec(ctx context.Context, q string, args ...any) error {
	return again(func() error {
		_, err := s.db.ExecContext(ctx, q, args...)
		return err
	})
}

// again runs fn, up to batchAttempts times while InnoDB gives up on it for
// a deadlock or a lock wait timeout (what it gave up on did nothing).
func again(fn func() error) error {
	var err error
	for range batchAttempts {
		if err = fn(); err == nil || !mysqlx.IsConflict(err) {
			return err
		}
	}
	return err
}

// prepareBatch inserts the rows of calls with one multi-row INSERT (a few
// when they are large), after one count of prepared messages per bounded
// group. Each INSERT commits by itself, all its rows or none, so a batch
// costs one round trip and one durable commit and needs no transaction.
// When an INSERT hits a duplicate id, its rows go in one by one, so that
// only the duplicate fails. A call is acknowledged only after its rows
// committed.
func (s *Store) prepareBatch(ctx context.Context, calls []*prepareCall) []error {
	errs := make([]error, len(calls))
	s.admit(ctx, calls, errs)
	var chunk []int
	size := 0
	flush := func() {
		if err := s.insertRows(ctx, calls, chunk, errs); err != nil {
			for _, i := range chunk {
				if errs[i] == nil {
					errs[i] = fmt.Errorf("broker: prepare %s: %w", calls[i].id, err)
				}
			}
		}
		chunk, size = chunk[:0], 0
	}
	for i, c := range calls {
		if errs[i] != nil {
			continue
		}
		if len(chunk) > 0 && size+c.size > maxInsertBytes {
			flush()
		}
		chunk, size = append(chunk, i), size+c.size
	}
	if len(chunk) > 0 {
		flush()
	}
	for i := range calls {
		if errs[i] == nil {
			s.metrics.Prepared()
		}
	}
	s.readmit(ctx, calls, errs)
	return errs
}

// readmit gives back the room under its group's bound that a call took and
// did not use because its id was a duplicate (known not inserted), and asks
// again for the calls of that group that the bound refused: without it one
// caller's duplicate id would refuse another caller's message. Calls whose
// INSERT failed otherwise keep their room: their rows may have committed.
func (s *Store) readmit(ctx context.Context, calls []*prepareCall, errs []error) {
	freed := map[string]int{}
	for i, c := range calls {
		if c.admitted && errors.Is(errs[i], txmsg.ErrConflict) {
			freed[c.group]++
		}
	}
	var retry []int
	for i, c := range calls {
		if freed[c.group] > 0 && errors.Is(errs[i], errTooManyPrepared) {
			retry = append(retry, i)
		}
	}
	if len(retry) == 0 {
		return
	}
	for g, n := range freed {
		pc := s.counts[g]
		pc.since = max(0, pc.since-n)
		s.counts[g] = pc
	}
	// Fewer calls each time, so this ends.
	again := make([]*prepareCall, len(retry))
	for k, i := range retry {
		again[k] = calls[i]
	}
	for k, err := range s.prepareBatch(ctx, again) {
		errs[retry[k]] = err
	}
}

// countMaxAge is how long a group's count of prepared messages may stand in
// for a new one while the group is far from its bound.
const countMaxAge = time.Second

// preparedCount is what the prepare writer last counted of a group.
type preparedCount struct {
	n     int       // prepared messages counted
	since int       // admitted by this store since
	at    time.Time // when counted
}

// admit fails the calls whose group would pass its bound, admitting a
// group's calls in queue order while they fit. It counts a group's
// prepared messages (up to the bound, so a group far over it costs no more
// than one at it) only when the group may be near its bound: a count under
// a second old, plus what this store admitted since, that stays below half
// the bound is trusted instead (other broker instances may have prepared
// some since, hence the margin). A group whose count fails has its calls
// fail, and only them. The counts belong to the prepare batcher's one writer.
func (s *Store) admit(ctx context.Context, calls []*prepareCall, errs []error) {
	asked := map[string]int{}
	for i, c := range calls {
		if c.limit > 0 && errs[i] == nil {
			asked[c.group]++
		}
	}
	room := map[string]int{}
	failed := map[string]error{}
	for g, k := range asked {
		pc, ok := s.counts[g]
		if !ok || time.Since(pc.at) >= countMaxAge || 2*(pc.n+pc.since+k) >= limitOf(calls, g) {
			var n int
			at := time.Now()
			if err := s.db.QueryRowContext(ctx, countPrepared, halfmsg.StatePrepared, g, limitOf(calls, g)).Scan(&n); err != nil {
				failed[g] = fmt.Errorf("broker: prepare: count prepared messages of group %s: %w", g, err)
				continue
			}
			pc = preparedCount{n: n, at: at}
		}
		room[g] = limitOf(calls, g) - pc.n - pc.since
		s.counts[g] = pc
	}
	for i, c := range calls {
		if c.limit <= 0 || errs[i] != nil {
			continue
		}
		if err := failed[c.group]; err != nil {
			errs[i] = err
			continue
		}
		if room[c.group] <= 0 {
			errs[i] = fmt.Errorf("%w: producer group %q has %d prepared messages (broker.max_prepared_per_group): commit or roll some back first",
				errTooManyPrepared, c.group, c.limit)
			continue
		}
		room[c.group]--
		c.admitted = true
		pc := s.counts[c.group]
		pc.since++
		s.counts[c.group] = pc
	}
	if len(s.counts) > maxCountedGroups {
		clear(s.counts)
	}
}

// maxCountedGroups bounds the groups whose counts admit keeps; past it they
// are all dropped and counted afresh.
const maxCountedGroups = 10000

// limitOf is the bound the calls of group g ask for (one handler gives all
// the same bound).
func limitOf(calls []*prepareCall, g string) int {
	for _, c := range calls {
		if c.group == g && c.limit > 0 {
			return c.limit
		}
	}
	return 0
}

// insertRows inserts the rows of calls[idx] with one statement, or one by
// one when that statement hits a duplicate id, setting the error of each
// duplicate. It returns the error of the rows whose fate it does not know.
func (s *Store) insertRows(ctx context.Context, calls []*prepareCall, idx []int, errs []error) error {
	var args []any
	for _, i := range idx {
		args = append(args, calls[i].args...)
	}
	q := insertHalf + strings.Repeat(", "+insertHalfRow, len(idx)-1)
	err := s.exec(ctx, q, args...)
	if err == nil || !mysqlx.IsDuplicate(err) {
		return err
	}
	if len(idx) == 1 {
		errs[idx[0]] = duplicate(calls[idx[0]])
		return nil
	}
	for _, i := range idx {
		if err := s.exec(ctx, insertHalf, calls[i].args...); err != nil {
			if !mysqlx.IsDuplicate(err) {
				errs[i] = fmt.Errorf("broker: prepare %s: %w", calls[i].id, err)
				continue
			}
			errs[i] = duplicate(calls[i])
		}
	}
	return nil
}

func duplicate(c *prepareCall) error {
	return fmt.Errorf("broker: prepare: %w: id %s already exists in topic %s", txmsg.ErrConflict, c.id, c.topic)
}

// errSplit: a combined UPDATE moved fewer rows than its calls named, so the
// batch runs again with one UPDATE per call to learn whose rows moved.
var errSplit = errors.New("broker: combined transition moved fewer rows than named")

// moveBatch reads the rows of every call's id with one SELECT (a
// consistent read, as transition's contract says), then runs the UPDATEs
// of the calls that move rows in one transaction. Calls that move rows alike
// (same target state, reason and source states) share one UPDATE. A row can
// leave its source state between the read and the UPDATE (another call for
// the same id, the check-back scanner): then the combined count falls short
// of the rows named and cannot say whose rows moved, so the transaction is
// undone and run again with one UPDATE per call.
func (s *Store) moveBatch(ctx context.Context, calls []*moveCall) []error {
	errs := make([]error, len(calls))
	byID, err := targetsOf(ctx, s.db, calls)
	if err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("read state: %w", err)
		}
		return errs
	}
	var movers []*moveCall
	for _, c := range calls {
		ts := byID[c.id]
		c.found, c.n = len(ts) > 0, 0
		if c.group != "" {
			ts = slices.DeleteFunc(slices.Clone(ts), func(t target) bool { return t.group != c.group })
		}
		c.ts = ts
		c.moved = slices.DeleteFunc(slices.Clone(ts), func(t target) bool { return t.state != c.f1 && t.state != c.f2 })
		if len(c.moved) > 0 {
			movers = append(movers, c)
		}
	}
	combine := len(movers) > 1
	for len(movers) > 0 {
		err := s.runBatch(ctx, len(movers), func(tx dbtx) error {
			if combine {
				return moveCombined(ctx, tx, movers)
			}
			for _, c := range movers {
				n, err := moveRows(ctx, tx, c.to, c.reason, c.f1, c.f2, c.moved)
				if err != nil {
					return err
				}
				c.n = n
			}
			return nil
		})
		if errors.Is(err, errSplit) {
			combine = false
			continue
		}
		if err != nil {
			for i, c := range calls {
				if len(c.moved) > 0 {
					errs[i] = err
				}
			}
			break
		}
		// Audit, count and wake here, once committed: a caller that stopped
		// waiting must not take the record of its move with it.
		for _, c := range movers {
			if c.n > 0 {
				s.moved(context.WithoutCancel(ctx), c.actor, c.id, c.to, c.by, c.moved, c.n)
			}
		}
		break
	}
	return errs
}

// targetsOf reads the rows of the ids of calls (see selectTargets), by id.
func targetsOf(ctx context.Context, q dbtx, calls []*moveCall) (map[string][]target, error) {
	var ids []any
	seen := map[string]bool{}
	for _, c := range calls {
		if !seen[c.id] {
			seen[c.id] = true
			ids = append(ids, c.id)
		}
	}
	ts, err := scanTargets(ctx, q, selectTargetsByIDs+sqlx.Placeholders(len(ids))+") ORDER BY h.seq", true, ids...)
	if err != nil {
		return nil, err
	}
	out := map[string][]target{}
	for _, t := range ts {
		out[t.id] = append(out[t.id], t)
	}
	return out, nil
}

// moveCombined runs one UPDATE per kind of move, failing with errSplit when
// one moved fewer rows than its calls named.
func moveCombined(ctx context.Context, tx dbtx, calls []*moveCall) error {
	done := make([]bool, len(calls))
	for i, c := range calls {
		if done[i] {
			continue
		}
		var (
			ts    []target
			group []*moveCall
		)
		for j := i; j < len(calls); j++ {
			d := calls[j]
			if !done[j] && d.to == c.to && d.reason == c.reason && d.f1 == c.f1 && d.f2 == c.f2 {
				done[j] = true
				ts = append(ts, d.moved...)
				group = append(group, d)
			}
		}
		n, err := moveRows(ctx, tx, c.to, c.reason, c.f1, c.f2, ts)
		if err != nil {
			return err
		}
		if int(n) != len(ts) {
			return errSplit
		}
		for _, d := range group {
			d.n = int64(len(d.moved))
		}
	}
	return nil
}

// moveRows sets the rows of ts still in f1 or f2 to `to` with one UPDATE, a
// commit recording what each row waits for, and returns how many changed.
func moveRows(ctx context.Context, e dbtx, to halfmsg.State, reason string, f1, f2 halfmsg.State, ts []target) (int64, error) {
	var (
		when strings.Builder
		in   []any
		args = []any{to, nullString(reason)}
	)
	for _, t := range ts {
		waits := t.waitsFor
		if to != halfmsg.StateCommitted {
			waits = sql.NullInt64{}
		}
		when.WriteString(" WHEN ? THEN ?")
		args = append(args, t.seq, waits)
		in = append(in, t.seq)
	}
	q := transitionHalf + when.String() + " END WHERE state IN (?, ?) AND seq IN (" + sqlx.Placeholders(len(in)) + ")"
	res, err := e.ExecContext(ctx, q, append(append(args, f1, f2), in...)...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
