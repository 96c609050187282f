package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Errors of Check.
var (
	// ErrNoSchema: the database has no version table; nothing was migrated.
	ErrNoSchema = errors.New("migrations: no txmsg schema")
	// ErrPending: some embedded migrations are not applied.
	ErrPending = errors.New("migrations: schema lacks migrations")
)

// checkVersion reads the current version from golang-migrate's table, and
// from a legacy table (one row per version) alike: the dirty one, else the
// newest.
const checkVersion = `SELECT version, dirty FROM ` + VersionTable + ` ORDER BY dirty DESC, version DESC LIMIT 1`

// erNoSuchTable is MySQL's ER_NO_SUCH_TABLE.
const erNoSuchTable = 1146

// Check says whether db's schema is current: nil when every embedded
// migration is applied and none is dirty, else an error wrapping
// ErrNoSchema, ErrDirty or ErrPending that says what to run. Daemons call it
// at start-up; it only reads, so it needs no multiStatements.
func Check(ctx context.Context, db *sql.DB) error {
	all, err := All()
	if err != nil {
		return err
	}
	var version int
	var dirty bool
	err = db.QueryRowContext(ctx, checkVersion).Scan(&version, &dirty)
	var me *mysql.MySQLError
	switch {
	case errors.As(err, &me) && me.Number == erNoSuchTable:
		return fmt.Errorf("%w: run 'txmsg migrate up' first", ErrNoSchema)
	case errors.Is(err, sql.ErrNoRows):
		version = 0
	case err != nil:
		return fmt.Errorf("migrations: read schema version: %w", err)
	case dirty:
		return fmt.Errorf("%w: migration %04d failed half way: repair it, then run 'txmsg migrate force %d'", ErrDirty, version, version)
	}
	var missing []string
	for _, m := range all {
		if m.Version > version {
			missing = append(missing, m.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w %s: run 'txmsg migrate up' first", ErrPending, strings.Join(missing, ", "))
	}
	return nil
}
