package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	mysqldriver "github.com/golang-migrate/migrate/v4/database/mysql"
	"github.com/golang-migrate/migrate/v4/source/iofs"
)

// VersionTable is golang-migrate's version table for txmsg's schema: one row,
// the current version and its dirty flag. Point your own golang-migrate at
// FS with x-migrations-table=txmsg_schema_migrations to share it.
const VersionTable = "txmsg_schema_migrations"

// ErrDirty is returned when a migration failed half way: the schema needs an
// operator's repair, then Force.
var ErrDirty = errors.New("migrations: schema is dirty")

// Status is a migration and whether it is applied. Dirty marks the version a
// migration failed at, half way.
type Status struct {
	Migration
	Applied bool
	Dirty   bool
}

// Migrator applies the embedded migrations to one database with
// golang-migrate. It is safe for concurrent use, also from several
// processes: each run holds golang-migrate's MySQL named lock. Each method
// converts a version table written by txmsg before it used golang-migrate
// (one row per version, with applied_at) on its first call.
type Migrator struct {
	db         *sql.DB
	fsys       fs.FS
	migrations []Migration
}

// New returns a Migrator on the database dsn names (a go-sql-driver/mysql
// DSN with a database name). It opens a small pool of its own, with
// multiStatements set, as golang-migrate runs each file in one call; it does
// not connect yet. Close it when done.
func New(dsn string) (*Migrator, error) { return newMigrator(dsn, files) }

func newMigrator(dsn string, fsys fs.FS) (*Migrator, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("migrations: parse DSN: %w", err)
	}
	if cfg.DBName == "" {
		return nil, errors.New("migrations: the DSN names no database")
	}
	cfg = cfg.Clone()
	cfg.MultiStatements = true
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	all, err := list(fsys)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(2)
	return &Migrator{db: db, fsys: fsys, migrations: all}, nil
}

// Close closes the Migrator's pool.
func (m *Migrator) Close() error { return m.db.Close() }

// Up applies every migration not yet applied, in order, and returns those it
// applied (none when the schema is current), also when it fails: the error
// names the migration that failed, which is left dirty. When ctx ends, Up
// stops after the migration running then and returns ctx's error.
func (m *Migrator) Up(ctx context.Context) ([]Migration, error) {
	var done []Migration
	err := m.run(ctx, func(mg *migrate.Migrate, rec *recorder) error {
		err := m.stepsUp(ctx, mg)
		for _, v := range rec.clean {
			done = append(done, m.version(v))
		}
		if errors.Is(err, migrate.ErrNoChange) {
			return nil
		}
		failed, ok := rec.failed()
		return m.describe("up", m.version(failed), ok, err)
	})
	return done, err
}

// Down reverts the last steps applied migrations (all of them when steps <= 0)
// and returns those it reverted, newest first, also when it fails. It
// refuses, with an error wrapping ErrDataLoss that says what and how much,
// when the down files would drop data (pending messages, inbox rows, group
// credentials...), unless opts has DiscardData. When ctx ends, Down stops
// after the migration running then and returns ctx's error.
func (m *Migrator) Down(ctx context.Context, steps int, opts ...DownOption) ([]Migration, error) {
	var o downOptions
	for _, opt := range opts {
		opt(&o)
	}
	var done []Migration
	err := m.runOn(ctx, func(conn *sql.Conn, mg *migrate.Migrate, rec *recorder) error {
		v, _, err := mg.Version()
		if errors.Is(err, migrate.ErrNilVersion) {
			return nil
		}
		if err != nil {
			return m.describe("down", Migration{}, false, err)
		}
		if !o.discard {
			if err := checkLoss(ctx, conn, m.reverted(int(v), steps)); err != nil {
				return err
			}
		}
		err = stepsDown(ctx, mg, steps)
		// golang-migrate records the version a down migration leads to:
		// the one reverted is the next above it.
		for _, v := range rec.clean {
			done = append(done, m.above(v))
		}
		var short migrate.ErrShortLimit
		if errors.Is(err, migrate.ErrNoChange) || errors.As(err, &short) {
			return nil
		}
		failed, ok := rec.failed()
		return m.describe("down", m.above(failed), ok, err)
	})
	return done, err
}

// Status lists every embedded migration with whether it is applied.
func (m *Migrator) Status(ctx context.Context) ([]Status, error) {
	var out []Status
	err := m.run(ctx, func(mg *migrate.Migrate, _ *recorder) error {
		cur, dirty, err := mg.Version()
		if errors.Is(err, migrate.ErrNilVersion) {
			cur, err = 0, nil
		}
		if err != nil {
			return fmt.Errorf("migrations: read version: %w", err)
		}
		for _, mig := range m.migrations {
			at := mig.Version == int(cur)
			out = append(out, Status{Migration: mig, Applied: mig.Version <= int(cur) && !(at && dirty), Dirty: at && dirty})
		}
		return nil
	})
	return out, err
}

// Force records version as cleanly applied (or, with applied false, as not
// applied, with every migration above it) without running it: the repair
// step after a dirty failure. version must be an embedded migration.
func (m *Migrator) Force(ctx context.Context, version int, applied bool) error {
	if _, ok := m.find(version); !ok {
		return fmt.Errorf("migrations: force: no migration %04d", version)
	}
	// Not applied: the schema is at the migration below version, or at
	// golang-migrate's "no version" (-1).
	target := version
	if !applied {
		target = -1
		for _, mig := range m.migrations {
			if mig.Version < version {
				target = mig.Version
			}
		}
	}
	return m.run(ctx, func(mg *migrate.Migrate, _ *recorder) error {
		if err := mg.Force(target); err != nil {
			return fmt.Errorf("migrations: force %04d: %w", version, err)
		}
		return nil
	})
}

// stepsUp applies the pending migrations one at a time, and stops between
// two once ctx ends (the caller reports ctx's error): golang-migrate's own
// GracefulStop sets a flag its reader goroutine reads unsynchronized. It
// returns migrate.ErrNoChange when none is pending; from a version these
// files lack, or a dirty one, golang-migrate's Up says why.
func (m *Migrator) stepsUp(ctx context.Context, mg *migrate.Migrate) error {
	v, dirty, err := mg.Version()
	switch {
	case errors.Is(err, migrate.ErrNilVersion):
		v = 0
	case err != nil:
		return err
	}
	if _, known := m.find(int(v)); dirty || (v != 0 && !known) {
		return mg.Up()
	}
	pending := 0
	for _, mig := range m.migrations {
		if mig.Version > int(v) {
			pending++
		}
	}
	if pending == 0 {
		return migrate.ErrNoChange
	}
	for range pending {
		if ctx.Err() != nil {
			return nil
		}
		if err := mg.Steps(1); err != nil {
			return err
		}
	}
	return nil
}

// stepsDown reverts limit migrations (every one when limit <= 0), one at a
// time, stopping between two once ctx ends, as stepsUp; it returns
// migrate.ErrNoChange when none is applied.
func stepsDown(ctx context.Context, mg *migrate.Migrate, limit int) error {
	for n := 0; limit <= 0 || n < limit; n++ {
		if _, _, err := mg.Version(); errors.Is(err, migrate.ErrNilVersion) {
			if n == 0 {
				return migrate.ErrNoChange
			}
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := mg.Steps(-1); err != nil {
			return err
		}
	}
	return nil
}

// reverted lists the versions Down(steps) reverts from version v: the
// applied ones from v down, steps of them (all when steps <= 0).
func (m *Migrator) reverted(v, steps int) []int {
	var out []int
	for i := len(m.migrations) - 1; i >= 0; i-- {
		if mv := m.migrations[i].Version; mv <= v && (steps <= 0 || len(out) < steps) {
			out = append(out, mv)
		}
	}
	return out
}

// run is runOn without the connection.
func (m *Migrator) run(ctx context.Context, fn func(*migrate.Migrate, *recorder) error) error {
	return m.runOn(ctx, func(_ *sql.Conn, mg *migrate.Migrate, rec *recorder) error { return fn(mg, rec) })
}

// runOn converts a legacy version table, then calls fn with golang-migrate
// on one connection, stopped gracefully when ctx ends.
func (m *Migrator) runOn(ctx context.Context, fn func(*sql.Conn, *migrate.Migrate, *recorder) error) error {
	conn, drv, err := m.openDriver(ctx)
	if err != nil {
		return err
	}
	rec := &recorder{Driver: drv, ctx: ctx}
	src, err := iofs.New(m.fsys, ".")
	if err != nil {
		drv.Close()
		return fmt.Errorf("migrations: read files: %w", err)
	}
	mg, err := migrate.NewWithInstance("iofs", src, "mysql", rec)
	if err != nil {
		drv.Close()
		return fmt.Errorf("migrations: open golang-migrate: %w", err)
	}
	defer mg.Close()
	mg.LockTimeout = lockWait + time.Minute // recorder.Lock bounds the wait
	if err := convertLegacy(ctx, conn, drv); err != nil {
		return err
	}
	if err := fn(conn, mg, rec); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("migrations: stopped: %w", err)
	}
	return nil
}

// openDriver opens golang-migrate's MySQL driver on a connection of its own,
// which the driver closes. The driver takes the migrations lock to create
// its version table, waiting 10s at most: while another migrator holds it,
// it is asked again until lockWait has passed or ctx ends.
func (m *Migrator) openDriver(ctx context.Context) (*sql.Conn, database.Driver, error) {
	deadline := time.Now().Add(lockWait)
	for {
		conn, err := m.db.Conn(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("migrations: connect: %w", err)
		}
		drv, err := mysqldriver.WithConnection(ctx, conn, &mysqldriver.Config{MigrationsTable: VersionTable})
		if err == nil {
			return conn, drv, nil
		}
		conn.Close()
		if !errors.Is(err, database.ErrLocked) || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, nil, fmt.Errorf("migrations: open golang-migrate: %w", err)
		}
	}
}

// describe wraps err from golang-migrate; ran says that migration mig was
// running when it failed.
func (m *Migrator) describe(direction string, mig Migration, ran bool, err error) error {
	var dirty migrate.ErrDirty
	switch {
	case err == nil:
		return nil
	case errors.As(err, &dirty):
		return fmt.Errorf("%w: version %d failed half way; repair it, then run 'txmsg migrate force %d'", ErrDirty, dirty.Version, dirty.Version)
	case ran:
		return fmt.Errorf("migrations: %s %s: %w", direction, mig, err)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("migrations: %s: the database is at a version these files lack (migrated by a newer txmsg?): %w", direction, err)
	default:
		return fmt.Errorf("migrations: %s: %w", direction, err)
	}
}

// find returns the embedded migration v.
func (m *Migrator) find(v int) (Migration, bool) {
	for _, mig := range m.migrations {
		if mig.Version == v {
			return mig, true
		}
	}
	return Migration{}, false
}

// version returns the embedded migration v, or one named "?" when there is
// none (a version the database knows and these files lack).
func (m *Migrator) version(v int) Migration {
	if mig, ok := m.find(v); ok {
		return mig
	}
	return Migration{Version: v, Name: "?"}
}

// above returns the first embedded migration above version v: the one a
// down migration to v reverts.
func (m *Migrator) above(v int) Migration {
	for _, mig := range m.migrations {
		if mig.Version > v {
			return mig
		}
	}
	return Migration{Version: v + 1, Name: "?"}
}
