// Package sqlx holds txmsg's driver-free database helpers: the one RunInTx
// one-row query, and identifier validation. It imports no driver, so the producer-side SDK
// packages can use it; MySQL's error numbers are classified in package
// mysqlerr below it.
package sqlx

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Time is t as a DATETIME(6) parameter: in UTC, truncated to microseconds.
// go-sql-driver sends a time.Time with its nanoseconds, and MariaDB, which
// cannot store them, then reads a condition such as `col < ?` on an index
// (a, col) by a alone instead of as a range: a purge measured 20,002 rows
// read for 2 deleted.
func Time(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Beginner starts transactions: *sql.DB (a pooled connection) and *sql.Conn
// (a connection held) satisfy it.
type Beginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// Querier runs queries: *sql.DB, *sql.Conn and *sql.Tx satisfy it.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// QueryRow scans the first row of query into dest, or returns
// sql.ErrNoRows. Unlike (*sql.DB).QueryRowContext it takes any Querier.
func QueryRow(ctx context.Context, q Querier, query string, args []any, dest ...any) error {
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

// Session is what a connection's session settings do to a statement run
// outside a transaction.
type Session struct {
	// Autocommit: such a statement commits by itself. Without it the
	// statement opens a transaction that stays open on the pooled
	// connection, its locks held and its snapshot kept.
	Autocommit bool
	// Isolation is the level as the server names it ("REPEATABLE-READ").
	Isolation string
}

// Standalone reports whether a statement outside a transaction commits by
// itself and reads only committed rows: autocommit on, not READ
// UNCOMMITTED.
func (s Session) Standalone() bool {
	return s.Autocommit && !strings.EqualFold(s.Isolation, "READ-UNCOMMITTED")
}

// ReadSession reads the session settings of one of q's connections, which
// a pool opens alike from its DSN. The isolation variable is
// transaction_isolation on MySQL 8 and MariaDB 11.1+, tx_isolation before.
func ReadSession(ctx context.Context, q Querier) (Session, error) {
	var (
		s          Session
		autocommit int
	)
	err := QueryRow(ctx, q, "SELECT @@SESSION.autocommit, @@SESSION.transaction_isolation", nil, &autocommit, &s.Isolation)
	if err != nil {
		if err2 := QueryRow(ctx, q, "SELECT @@SESSION.autocommit, @@SESSION.tx_isolation", nil, &autocommit, &s.Isolation); err2 != nil {
			return Session{}, errors.Join(err, err2)
		}
	}
	s.Autocommit = autocommit != 0
	return s, nil
}

// RunInTx runs fn in a transaction: commit when fn returns nil, roll back
// otherwise (the rollback error joined to fn's).
func RunInTx(ctx context.Context, db Beginner, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("rollback: %w", rerr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ValidIdent reports whether name is safe to put into SQL as a table name:
// letters, digits and underscores, not starting with a digit, at most 64.
func ValidIdent(name string) bool { return identRE.MatchString(name) }

// Placeholders returns n query placeholders for an IN list, "?,?,…,?";
// n must be at least 1.
func Placeholders(n int) string { return strings.Repeat("?,", n-1) + "?" }

// Truncate cuts s to at most n bytes on a rune boundary, for a text column
// of n bytes: a cut UTF-8 character would make a strict server refuse it.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
