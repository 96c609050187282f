package checkback

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/sqlx"
)

// ledgerTable is the ledger table, created by migration 0002.
const ledgerTable = "txmsg_checkback_ledger"

// ErrAlreadyDecided is returned by Ledger.Record when the ledger already has a
// row for the message: usually a check-back found no local transaction and
// recorded a rollback, so this late transaction must not commit. It wraps
// txmsg.ErrConflict.
var ErrAlreadyDecided = fmt.Errorf("%w: checkback: the message already has a ledger row (a check-back answered rollback)", txmsg.ErrConflict)

// Ledger states stored in the state column.
const (
	ledgerCommitted  = 1
	ledgerRolledBack = 2
)

// The ledger's statements. INSERT IGNORE: a row already there (a
// check-back's rollback marker) shows as 0 rows affected, so Record needs no
// driver to classify the duplicate key, and this package links no MySQL
// driver.
const (
	insertCommit   = "INSERT IGNORE INTO " + ledgerTable + " (msg_id, state, created_at) VALUES (?, 1, UTC_TIMESTAMP(6))"
	insertRollback = "INSERT IGNORE INTO " + ledgerTable + " (msg_id, state, created_at) VALUES (?, 2, UTC_TIMESTAMP(6))"
	selectState    = "SELECT state FROM " + ledgerTable + " WHERE msg_id = ?"
	purgeLedger    = "DELETE FROM " + ledgerTable + " WHERE created_at < ? ORDER BY created_at LIMIT ?"
)

// Execer writes through a transaction: *sql.Tx satisfies it.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Ledger is the producer-side record of local transactions, and the Checker
// that answers check-backs from it. It is safe for concurrent use.
type Ledger struct {
	db  *sql.DB
	log *slog.Logger
	// noWait is whether the server takes SET STATEMENT
	// innodb_lock_wait_timeout = 0 (MariaDB): noWaitUnknown until a
	// VERSION() read says.
	noWait atomic.Int32
	// session is how the ledger runs its statements (see do):
	// sessionUnknown until the pool's settings are read.
	session atomic.Int32
}

// The values of Ledger.session.
const (
	sessionUnknown = iota
	sessionPlain   // each statement alone: it commits by itself and reads only committed rows
	sessionTx      // each operation in a READ COMMITTED transaction of its own
)

// ledgerDB runs the ledger's statements: *sql.DB and *sql.Tx satisfy it.
type ledgerDB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// do runs fn on the pool, or in a READ COMMITTED transaction of its own
// where the pool's sessions (its DSN, the server's defaults) would not keep
// a lone statement safe: with autocommit off its transaction stays open on
// the pooled connection, a rollback marker locked and uncommitted; at READ
// UNCOMMITTED a batch's read sees the row of a transaction still open and
// answers commit for it, which may yet roll back.
func (l *Ledger) do(ctx context.Context, fn func(q ledgerDB) error) error {
	if l.session.Load() == sessionUnknown {
		s, err := sqlx.ReadSession(ctx, l.db)
		if err != nil {
			return fmt.Errorf("checkback: ledger: read the pool's isolation level and autocommit: %w", err)
		}
		if s.Standalone() {
			l.session.Store(sessionPlain)
		} else {
			l.session.Store(sessionTx)
		}
	}
	if l.session.Load() == sessionPlain {
		return fn(l.db)
	}
	return sqlx.RunInTx(ctx, l.db, &sql.TxOptions{Isolation: sql.LevelReadCommitted}, func(tx *sql.Tx) error { return fn(tx) })
}

// The values of Ledger.noWait.
const (
	noWaitUnknown = iota
	noWaitYes
	noWaitNo
)

// LedgerOption configures a Ledger.
type LedgerOption func(*Ledger)

// WithLedgerLogger sets the logger of the cleanup job (default: discarded).
func WithLedgerLogger(log *slog.Logger) LedgerOption {
	return func(l *Ledger) {
		if log != nil {
			l.log = log
		}
	}
}

// WithoutBatchMarkers has CheckBatch check each message without a ledger
// row alone, never with one SET STATEMENT … FOR INSERT for all of them:
// for a pool behind a proxy that pins a connection on a SET STATEMENT it
// cannot parse (ProxySQL versions without SET STATEMENT support lock the
// connection to its host group, and the pool's other queries with it).
func WithoutBatchMarkers() LedgerOption {
	return func(l *Ledger) { l.noWait.Store(noWaitNo) }
}

// LedgerChecker returns a Ledger on db, the producer's own database: the one
// its local transactions write to, holding the txmsg_checkback_ledger table.
// Any pool serves: where its sessions run with autocommit off or at READ
// UNCOMMITTED, each check runs in a READ COMMITTED transaction of its own.
func LedgerChecker(db *sql.DB, opts ...LedgerOption) (*Ledger, error) {
	if db == nil {
		return nil, errors.New("checkback: ledger: nil *sql.DB")
	}
	l := &Ledger{db: db, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(l)
	}
	return l, nil
}

// Record writes the ledger row of message id through tx, the local
// transaction whose commit decides the message: every half message prepared
// under id (one per topic) follows it, so a transaction records its id once.
// If a check-back got there first (and answered rollback), it returns
// ErrAlreadyDecided and the caller must roll tx back.
func (l *Ledger) Record(ctx context.Context, tx Execer, id string) error {
	// INSERT IGNORE would store a longer id cut to the column, and a check
	// for the whole id would then find no row and answer rollback.
	if id == "" || len(id) > txmsg.MaxIDLen {
		return fmt.Errorf("checkback: ledger row for %q: %w: id must be 1 to %d bytes", id, txmsg.ErrInvalidMessage, txmsg.MaxIDLen)
	}
	res, err := tx.ExecContext(ctx, insertCommit, id)
	if err != nil {
		return fmt.Errorf("checkback: insert ledger row for %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("checkback: insert ledger row for %s: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("checkback: ledger row for %s: %w", id, ErrAlreadyDecided)
	}
	return nil
}

// Check implements Checker. It inserts a rollback marker for req.ID unless a
// row exists. The race with the local transaction, step by step:
//
//   - the transaction committed its row before: INSERT IGNORE does nothing,
//     the row says committed, the answer is commit;
//   - the transaction is still open: its uncommitted row holds the key's
//     lock, so INSERT IGNORE waits; when it commits the insert is ignored and
//     the answer is commit; when it rolls back the marker is inserted and the
//     answer is rollback;
//   - the transaction has not started (or died): the marker is inserted, the
//     answer is rollback, and the late transaction's Record fails on the
//     primary key, so it can never commit.
//
// A wait longer than ctx's deadline (or innodb_lock_wait_timeout) returns an
// error, which Handler answers as unknown: the broker asks again later.
func (l *Ledger) Check(ctx context.Context, req Request) (Answer, error) {
	// INSERT IGNORE would cut a longer id to the column and mark another
	// message rolled back.
	if req.ID == "" || len(req.ID) > txmsg.MaxIDLen {
		return 0, fmt.Errorf("checkback: check of %q: %w: id must be 1 to %d bytes", req.ID, txmsg.ErrInvalidMessage, txmsg.MaxIDLen)
	}
	a := AnswerRollback
	err := l.do(ctx, func(q ledgerDB) error {
		res, err := q.ExecContext(ctx, insertRollback, req.ID)
		if err != nil {
			return fmt.Errorf("checkback: ledger marker for %s: %w", req.ID, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 1 {
			return nil
		}
		var st int
		if err := q.QueryRowContext(ctx, selectState, req.ID).Scan(&st); err != nil {
			return fmt.Errorf("checkback: read ledger row of %s: %w", req.ID, err)
		}
		if st == ledgerCommitted {
			a = AnswerCommit
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return a, nil
}

// CheckBatch implements BatchChecker with Check's answers: one consistent
// read finds the rows of every message whose transaction ended (a row is
// never changed once committed, so the read locks nothing), and each other
// message is checked as Check does, checksAtOnce at a time: a check that
// waits on an open transaction holds no marker of another message, and one
// that fails (ctx ended during the wait) answers unknown alone. On MariaDB,
// when two or more messages have no row, they first get their rollback
// markers in one statement that never waits for a row lock
// (innodb_lock_wait_timeout 0): if an open transaction holds one of them,
// or the statement fails for any other reason, it has written nothing and
// each is checked alone. WithoutBatchMarkers turns that statement off. An
// id longer than txmsg.MaxIDLen (never a half message's) answers unknown.
func (l *Ledger) CheckBatch(ctx context.Context, reqs []Request) ([]Answer, error) {
	ids := make([]string, 0, len(reqs))
	for _, r := range reqs {
		if r.ID != "" && len(r.ID) <= txmsg.MaxIDLen {
			ids = append(ids, r.ID)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	states := make(map[string]int, len(ids))
	if err := l.readStates(ctx, ids, states); err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range ids {
		if _, ok := states[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 1 && l.markNoWait(ctx, missing) == nil {
		if err := l.readStates(ctx, missing, states); err != nil {
			return nil, err
		}
	}
	answers := make(map[string]Answer, len(ids))
	var alone []string // still without a row: each checked as Check does
	for _, id := range ids {
		switch st, ok := states[id]; {
		case !ok:
			alone = append(alone, id)
		case st == ledgerCommitted:
			answers[id] = AnswerCommit
		default:
			answers[id] = AnswerRollback
		}
	}
	checked := make([]Answer, len(alone))
	atOnce(len(alone), func(i int) {
		a, err := l.Check(ctx, Request{ID: alone[i]})
		if err != nil {
			l.log.WarnContext(ctx, "checkback: check failed, answering unknown", slog.String("msg_id", alone[i]), slog.Any("error", err))
			a = AnswerUnknown
		}
		checked[i] = a
	})
	for i, id := range alone {
		answers[id] = checked[i]
	}
	as := make([]Answer, len(reqs))
	for i, r := range reqs {
		if a, ok := answers[r.ID]; ok {
			as[i] = a
		} else {
			as[i] = AnswerUnknown
		}
	}
	return as, nil
}

// markNoWait inserts rollback markers for ids with one statement that
// fails rather than wait for a row lock, on MariaDB 10.3 and later (where
// innodb_lock_wait_timeout 0 means so); elsewhere, and after a server
// refused the statement for any reason but a lock, it fails at once.
func (l *Ledger) markNoWait(ctx context.Context, ids []string) error {
	if l.noWait.Load() == noWaitUnknown {
		var v string
		if err := l.db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v); err != nil {
			return fmt.Errorf("checkback: read the server's version: %w", err)
		}
		if noWaitServer(v) {
			l.noWait.Store(noWaitYes)
		} else {
			l.noWait.Store(noWaitNo)
		}
	}
	if l.noWait.Load() != noWaitYes {
		return errors.New("checkback: the server cannot insert without waiting")
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	q := "SET STATEMENT innodb_lock_wait_timeout = 0 FOR INSERT IGNORE INTO " + ledgerTable + " (msg_id, state, created_at) VALUES " +
		strings.Repeat("(?, 2, UTC_TIMESTAMP(6)), ", len(ids)-1) + "(?, 2, UTC_TIMESTAMP(6))"
	err := l.do(ctx, func(db ledgerDB) error {
		_, err := db.ExecContext(ctx, q, args...)
		return err
	})
	// A server's refusal of the statement (a proxy or server that does not
	// take SET STATEMENT) would fail every batch alike; the lock it would
	// not wait for (1205), a deadlock (1213) or a lost connection pass.
	if err != nil && ctx.Err() == nil && refusal(err) && l.noWait.CompareAndSwap(noWaitYes, noWaitNo) {
		l.log.WarnContext(ctx, "checkback: ledger: the server refused one-statement rollback markers; checking a batch's messages one by one",
			slog.Any("error", err))
	}
	return err
}

// serverError finds the number of a MySQL server error in a driver's
// message ("Error 1064 (42000): …"): the package links no driver.
var serverError = regexp.MustCompile(`Error (\d{4,5})\b`)

// refusal reports whether err is the server refusing a statement for good:
// a server error other than a lock wait timeout (1205) or a deadlock (1213).
func refusal(err error) bool {
	m := serverError.FindStringSubmatch(err.Error())
	return m != nil && m[1] != "1205" && m[1] != "1213"
}

// noWaitServer reports whether VERSION() v names MariaDB 10.3 or later.
func noWaitServer(v string) bool {
	if !strings.Contains(v, "MariaDB") {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 10 || (major == 10 && minor >= 3)
}

// readStates reads the ledger rows of ids into states.
func (l *Ledger) readStates(ctx context.Context, ids []string, states map[string]int) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	q := "SELECT msg_id, state FROM " + ledgerTable + " WHERE msg_id IN (?" + strings.Repeat(", ?", len(ids)-1) + ")"
	err := l.do(ctx, func(db ledgerDB) error {
		rows, err := db.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id string
				st int
			)
			if err := rows.Scan(&id, &st); err != nil {
				return err
			}
			states[id] = st
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("checkback: read ledger rows of %d messages: %w", len(ids), err)
	}
	return nil
}

// Purge deletes ledger rows created before before, at most limit per
// statement, until none is left or ctx ends, and returns how many it deleted.
// Keep rows longer than the broker's whole check-back schedule.
func (l *Ledger) Purge(ctx context.Context, before time.Time, limit int) (int64, error) {
	if limit < 1 {
		limit = 1000
	}
	var total int64
	for {
		var n int64
		err := l.do(ctx, func(db ledgerDB) error {
			res, err := db.ExecContext(ctx, purgeLedger, sqlx.Time(before), limit)
			if err == nil {
				n, _ = res.RowsAffected()
			}
			return err
		})
		if err != nil {
			return total, fmt.Errorf("checkback: purge ledger %s: %w", ledgerTable, err)
		}
		total += n
		if n < int64(limit) {
			return total, nil
		}
	}
}

// RunCleanup purges ledger rows older than retention every interval (for
// example time.Hour), starting after the first interval, until ctx ends; it
// returns nil then. A purge that fails is logged and tried again at the next
// tick. It runs on the caller's goroutine, so purges never overlap.
func (l *Ledger) RunCleanup(ctx context.Context, interval, retention time.Duration) error {
	if retention <= 0 {
		return fmt.Errorf("checkback: ledger retention %v: want more than 0", retention)
	}
	if interval <= 0 {
		return fmt.Errorf("checkback: ledger cleanup interval %v: want more than 0", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := l.Purge(ctx, time.Now().Add(-retention), 1000)
		switch {
		case err != nil && ctx.Err() == nil:
			l.log.ErrorContext(ctx, "checkback: ledger cleanup failed", slog.Any("error", err))
		case n > 0:
			l.log.InfoContext(ctx, "checkback: ledger cleanup", slog.Int64("deleted", n))
		}
	}
}
