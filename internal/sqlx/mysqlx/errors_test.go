package mysqlx

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/go-sql-driver/mysql"
)

func TestMysqlxIsConflict(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{&mysql.MySQLError{Number: ErLockDeadlock}, true},
		{fmt.Errorf("wrapped: %w", &mysql.MySQLError{Number: ErLockWaitTimeout}), true},
		{&mysql.MySQLError{Number: ErDupEntry}, false},
		{&mysql.MySQLError{Number: 1064}, false},
		{driver.ErrBadConn, false},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, false},
		{errors.New("plain"), false},
	}
	for _, tt := range tests {
		if got := IsConflict(tt.err); got != tt.want {
			t.Errorf("IsConflict(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if !IsDuplicate(fmt.Errorf("x: %w", &mysql.MySQLError{Number: ErDupEntry})) || IsDuplicate(errors.New("x")) {
		t.Error("IsDuplicate misclassifies")
	}
}

func TestMysqlxIsUnavailable(t *testing.T) {
	for err, want := range map[error]bool{
		mysql.ErrInvalidConn:                                 true,
		fmt.Errorf("begin: %w", driver.ErrBadConn):           true,
		&mysql.MySQLError{Number: 1290}:                      true, // read only, in a failover
		&mysql.MySQLError{Number: 1040}:                      true,
		&mysql.MySQLError{Number: ErLockDeadlock}:            false,
		&mysql.MySQLError{Number: 1064}:                      false,
		&net.OpError{Op: "dial", Err: errors.New("refused")}: false, // may be any service's
		errors.New("plain"):                                  false,
	} {
		if got := IsUnavailable(err); got != want {
			t.Errorf("IsUnavailable(%v) = %v, want %v", err, got, want)
		}
	}
}
