// Package sqlx holds txmsg's database helpers: the one RunInTx, the retryable
// error classifier, and the SQL that differs between databases.
package sqlx

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
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
	ErDupEntry         = 1062
	ErLockWaitTimeout  = 1205
	ErLockDeadlock     = 1213
	ErServerShutdown   = 1053
	ErConCount         = 1040
	ErQueryInterrupted = 1317
)

// IsRetryable says whether err is worth retrying the whole transaction for:
// a deadlock or lock wait timeout (InnoDB rolled back the statement or
// transaction, the next try usually wins), a dropped or refused connection,
// or a server shutting down or full. Constraint and syntax errors are not.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case ErLockDeadlock, ErLockWaitTimeout, ErServerShutdown, ErConCount, ErQueryInterrupted:
			return true
		}
		return false
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, sql.ErrConnDone) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
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
