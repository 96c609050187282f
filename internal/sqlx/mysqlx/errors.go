// Package mysqlx holds what txmsg needs to know of MySQL and MariaDB through
// go-sql-driver/mysql: the errors it branches on, and connections with a
// strict sql_mode. It is the only internal package that imports the driver.
package mysqlx

import (
	"database/sql/driver"
	"errors"

	"github.com/go-sql-driver/mysql"
)

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

// Server errors that say the server cannot serve now, not that the
// statement is wrong: too many connections (1040), shutting down (1053), read
// only during a failover (1290, 1836), the connection killed (1927), closed
// for inactivity (4031, MySQL 8).
var unavailable = map[uint16]bool{1040: true, 1053: true, 1290: true, 1836: true, 1927: true, 4031: true}

// IsUnavailable says whether err says that the database could not be
// reached or could not serve for now: the driver's broken connection
// (mysql.ErrInvalidConn, driver.ErrBadConn) or one of the server errors
// above. Unlike a plain network error these come only from a database
// driver, so a handler's own calls to other services are not taken for them.
func IsUnavailable(err error) bool {
	var me *mysql.MySQLError
	return errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, driver.ErrBadConn) ||
		(errors.As(err, &me) && unavailable[me.Number])
}
