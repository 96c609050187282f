package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/golang-migrate/migrate/v4/database"
)

// Before golang-migrate, txmsg's own migrator kept txmsg_schema_migrations
// with one row per applied version (version, dirty, applied_at). golang-migrate
// keeps one row (version, dirty) in a table of the same name. convertLegacy
// rewrites the first into the second once, through a table built aside and
// swapped in by one atomic RENAME, so a crash at any step leaves either
// table readable and the next run finishes the work.
const (
	legacyShape = `SELECT COUNT(*) FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = '` + VersionTable + `' AND column_name = 'applied_at'`
	// The version a dirty migration failed at, else the newest applied.
	legacyState  = `SELECT version, dirty FROM ` + VersionTable + ` ORDER BY dirty DESC, version DESC LIMIT 1`
	nextTable    = VersionTable + "_next"
	oldTable     = VersionTable + "_legacy"
	dropNext     = `DROP TABLE IF EXISTS ` + nextTable
	dropOld      = `DROP TABLE IF EXISTS ` + oldTable
	createNext   = `CREATE TABLE ` + nextTable + ` (version bigint not null primary key, dirty boolean not null)`
	insertNext   = `INSERT INTO ` + nextTable + ` (version, dirty) VALUES (?, ?)`
	swapVersions = `RENAME TABLE ` + VersionTable + ` TO ` + oldTable + `, ` + nextTable + ` TO ` + VersionTable
)

// convertLegacy converts a legacy version table on conn, holding lock (the
// golang-migrate driver's named lock) meanwhile; it does nothing when the
// table has golang-migrate's shape.
func convertLegacy(ctx context.Context, conn *sql.Conn, lock database.Driver) (err error) {
	if err := lock.Lock(); err != nil {
		return fmt.Errorf("migrations: lock: %w", err)
	}
	defer func() {
		if uerr := lock.Unlock(); uerr != nil {
			err = errors.Join(err, fmt.Errorf("migrations: unlock: %w", uerr))
		}
	}()
	var n int
	if err := conn.QueryRowContext(ctx, legacyShape).Scan(&n); err != nil {
		return fmt.Errorf("migrations: inspect %s: %w", VersionTable, err)
	}
	if n == 0 {
		// A crash may have left the old table after the swap.
		if _, err := conn.ExecContext(ctx, dropOld); err != nil {
			return fmt.Errorf("migrations: drop %s: %w", oldTable, err)
		}
		return nil
	}
	var version int64
	var dirty bool
	err = conn.QueryRowContext(ctx, legacyState).Scan(&version, &dirty)
	empty := errors.Is(err, sql.ErrNoRows)
	if err != nil && !empty {
		return fmt.Errorf("migrations: read %s: %w", VersionTable, err)
	}
	steps := []struct {
		query string
		args  []any
	}{
		{dropNext, nil},
		{createNext, nil},
		{insertNext, []any{version, dirty}},
		{swapVersions, nil},
		{dropOld, nil},
	}
	for _, s := range steps {
		if s.query == insertNext && empty {
			continue // nothing applied: golang-migrate's table stays empty
		}
		if _, err := conn.ExecContext(ctx, s.query, s.args...); err != nil {
			return fmt.Errorf("migrations: convert %s to golang-migrate's shape: %w", VersionTable, err)
		}
	}
	return nil
}
