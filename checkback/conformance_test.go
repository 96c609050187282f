package checkback_test

import (
	"context"
	"errors"
	"testing"

	"github.com/txmsg/txmsg/checkback/checkbacktest"
)

func TestCheckbackLedgerConformance(t *testing.T) {
	t.Parallel()
	db, l := newLedger(t)
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
}
