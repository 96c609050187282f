// Package mysqlx holds what txmsg needs to know of MySQL and MariaDB through
// go-sql-driver/mysql: the errors it branches on, and connections with a
// strict sql_mode. It is the only internal package that imports the driver.
package mysqlx

import (
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
