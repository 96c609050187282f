package checkback_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/checkback/checkbacktest"
	"github.com/txmsg/txmsg/internal/testenv"
)

// The suite runs against a Ledger on the test database's pool, and on pools
// whose sessions read uncommitted rows or run with autocommit off: the
// producer's local transactions write through the test pool either way.
func TestCheckbackLedgerConformance(t *testing.T) {
	t.Parallel()
	for _, pool := range []struct {
		name string
		open func(t *testing.T, db *testenv.Database) *sql.DB
	}{
		{"default", func(_ *testing.T, db *testenv.Database) *sql.DB { return db.DB }},
		{"read-uncommitted", func(t *testing.T, db *testenv.Database) *sql.DB { return db.ReadUncommittedPool(t) }},
		{"autocommit-off", func(t *testing.T, db *testenv.Database) *sql.DB { return db.Pool(t, "autocommit=0") }},
	} {
		t.Run(pool.name, func(t *testing.T) {
			t.Parallel()
			db := testenv.NewDB(t)
			l, err := checkback.LedgerChecker(pool.open(t, db))
			if err != nil {
				t.Fatal(err)
			}
			checkbacktest.Run(t, func(t *testing.T) checkbacktest.Harness {
				return checkbacktest.Harness{
					Checker: l,
					Begin: func(ctx context.Context, id string) (func(bool) error, error) {
						tx, err := db.DB.BeginTx(ctx, nil)
						if err != nil {
							return nil, err
						}
						if err := l.Record(ctx, tx, id); err != nil {
							return nil, errors.Join(err, tx.Rollback())
						}
						return func(commit bool) error {
							if commit {
								return tx.Commit()
							}
							return tx.Rollback()
						}, nil
					},
				}
			})
		})
	}
}
