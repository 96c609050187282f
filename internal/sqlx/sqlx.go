// Package sqlx holds txmsg's database helpers: the one RunInTx, the error
// classifiers, and identifier validation.
package sqlx

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"

	"github.com/go-sql-driver/mysql"
)

// RunInTx runs fn in a transaction: commit when fn returns nil, roll back
// otherwise (the rollback error joined to fn's).
func RunInTx(ctx context.Context, db *sql.DB, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
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

// MySQL error numbers txmsg branches on.
const (
	ErDupEntry        = 1062
	ErLockWaitTimeout = 1205
	ErLockDeadlock    = 1213
)

// IsConflict says whether err is InnoDB giving up on a transaction because
// of other transactions: a deadlock (1213, the transaction was rolled back) or
// a lock wait timeout (1205). The transaction did nothing wrong and usually
// succeeds when run again, so callers retry it without charging the work an
// attempt. Connection errors are not included: they look alike whether they
// come from the database or from a handler's own network calls.
func IsConflict(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == ErLockDeadlock || me.Number == ErLockWaitTimeout)
}

// IsDuplicate says whether err is a unique-key violation.
func IsDuplicate(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == ErDupEntry
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ValidIdent reports whether name is safe to put into SQL as a table name:
// letters, digits and underscores, not starting with a digit, at most 64.
func ValidIdent(name string) bool { return identRE.MatchString(name) }
