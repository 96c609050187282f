package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed *.sql
var files embed.FS

// FS returns the embedded migration files, for users who copy them into their
// own migration tool.
func FS() fs.FS { return files }

// ErrDirty is returned when a migration failed half way: the schema needs an
// operator's repair, then Force.
var ErrDirty = errors.New("migrations: schema is dirty")

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	Up      string
	Down    string
}

// Status is a migration and whether, and when, it was applied.
type Status struct {
	Migration
	Applied   bool
	Dirty     bool
	AppliedAt time.Time
}

// All returns the embedded migrations in version order.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, fmt.Errorf("migrations: read embedded files: %w", err)
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		name := e.Name()
		base, dir, ok := cutDirection(name)
		if !ok {
			continue
		}
		num, title, ok := strings.Cut(base, "_")
		if !ok {
			return nil, fmt.Errorf("migrations: file %s: want NNNN_name.up.sql", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migrations: file %s: bad version %q", name, num)
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return nil, fmt.Errorf("migrations: read %s: %w", name, err)
		}
		m := byVersion[v]
		if m == nil {
			m = &Migration{Version: v, Name: title}
			byVersion[v] = m
		}
		if dir == "up" {
			m.Up = string(body)
		} else {
			m.Down = string(body)
		}
	}
	out := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		if m.Up == "" || m.Down == "" {
			return nil, fmt.Errorf("migrations: version %d lacks its up or down file", m.Version)
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

func cutDirection(name string) (base, dir string, ok bool) {
	if b, ok := strings.CutSuffix(name, ".up.sql"); ok {
		return b, "up", true
	}
	if b, ok := strings.CutSuffix(name, ".down.sql"); ok {
		return b, "down", true
	}
	return "", "", false
}

// Migrator applies the embedded migrations to one database. It is safe for
// concurrent use, also from several processes: each run holds a MySQL named
// lock.
type Migrator struct {
	db         *sql.DB
	migrations []Migration
}

// New returns a Migrator for db.
func New(db *sql.DB) (*Migrator, error) {
	if db == nil {
		return nil, errors.New("migrations: nil *sql.DB")
	}
	all, err := All()
	if err != nil {
		return nil, err
	}
	return &Migrator{db: db, migrations: all}, nil
}

const (
	createVersionTable = `CREATE TABLE IF NOT EXISTS txmsg_schema_migrations (
  version    INT         NOT NULL,
  dirty      BOOLEAN     NOT NULL,
  applied_at DATETIME(6) NOT NULL,
  PRIMARY KEY (version)
) ENGINE=InnoDB`
	selectVersions = `SELECT version, dirty, applied_at FROM txmsg_schema_migrations`
	markDirty      = `REPLACE INTO txmsg_schema_migrations (version, dirty, applied_at) VALUES (?, TRUE, UTC_TIMESTAMP(6))`
	markClean      = `UPDATE txmsg_schema_migrations SET dirty = FALSE WHERE version = ?`
	deleteVersion  = `DELETE FROM txmsg_schema_migrations WHERE version = ?`
	lockName       = "txmsg_migrate"
)

// Up applies every migration not yet applied, in order, and returns those it
// applied (none when the schema is current).
func (m *Migrator) Up(ctx context.Context) ([]Migration, error) {
	var done []Migration
	err := m.locked(ctx, func(conn *sql.Conn, st map[int]Status) error {
		for _, mig := range m.migrations {
			if st[mig.Version].Applied {
				continue
			}
			if err := m.apply(ctx, conn, mig.Version, mig.Up, true); err != nil {
				return fmt.Errorf("migrations: up %04d_%s: %w", mig.Version, mig.Name, err)
			}
			done = append(done, mig)
		}
		return nil
	})
	return done, err
}

// Down reverts the last steps applied migrations (all of them when steps <= 0)
// and returns those it reverted, newest first.
func (m *Migrator) Down(ctx context.Context, steps int) ([]Migration, error) {
	var done []Migration
	err := m.locked(ctx, func(conn *sql.Conn, st map[int]Status) error {
		for i := len(m.migrations) - 1; i >= 0; i-- {
			mig := m.migrations[i]
			if !st[mig.Version].Applied {
				continue
			}
			if steps > 0 && len(done) == steps {
				break
			}
			if err := m.apply(ctx, conn, mig.Version, mig.Down, false); err != nil {
				return fmt.Errorf("migrations: down %04d_%s: %w", mig.Version, mig.Name, err)
			}
			done = append(done, mig)
		}
		return nil
	})
	return done, err
}

// Status lists every embedded migration with whether it is applied.
func (m *Migrator) Status(ctx context.Context) ([]Status, error) {
	if _, err := m.db.ExecContext(ctx, createVersionTable); err != nil {
		return nil, fmt.Errorf("migrations: create version table: %w", err)
	}
	st, err := m.status(ctx, m.db)
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(m.migrations))
	for _, mig := range m.migrations {
		s := st[mig.Version]
		s.Migration = mig
		out = append(out, s)
	}
	return out, nil
}

// Force marks version as cleanly applied (or, with applied false, as not
// applied) without running it: the repair step after a dirty failure.
func (m *Migrator) Force(ctx context.Context, version int, applied bool) error {
	return m.lockedAllowDirty(ctx, func(conn *sql.Conn, _ map[int]Status) error {
		if !applied {
			_, err := conn.ExecContext(ctx, deleteVersion, version)
			return err
		}
		if _, err := conn.ExecContext(ctx, markDirty, version); err != nil {
			return err
		}
		_, err := conn.ExecContext(ctx, markClean, version)
		return err
	})
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (m *Migrator) status(ctx context.Context, q queryer) (map[int]Status, error) {
	rows, err := q.QueryContext(ctx, selectVersions)
	if err != nil {
		return nil, fmt.Errorf("migrations: read versions: %w", err)
	}
	defer rows.Close()
	st := map[int]Status{}
	for rows.Next() {
		var s Status
		if err := rows.Scan(&s.Version, &s.Dirty, &s.AppliedAt); err != nil {
			return nil, fmt.Errorf("migrations: read versions: %w", err)
		}
		s.Applied = true
		st[s.Version] = s
	}
	return st, rows.Err()
}

// locked runs fn on one connection holding the named lock, after checking
// that no version is dirty.
func (m *Migrator) locked(ctx context.Context, fn func(*sql.Conn, map[int]Status) error) error {
	return m.lockedAllowDirty(ctx, func(conn *sql.Conn, st map[int]Status) error {
		for v, s := range st {
			if s.Dirty {
				return fmt.Errorf("%w: version %d failed half way; repair it, then run 'txmsg migrate force %d'", ErrDirty, v, v)
			}
		}
		return fn(conn, st)
	})
}

// lockedAllowDirty runs fn on one connection holding the named lock, with
// the status of every recorded version.
func (m *Migrator) lockedAllowDirty(ctx context.Context, fn func(*sql.Conn, map[int]Status) error) (err error) {
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrations: connect: %w", err)
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 60)`, lockName).Scan(&got); err != nil {
		return fmt.Errorf("migrations: take lock %s: %w", lockName, err)
	}
	if got.Int64 != 1 {
		return fmt.Errorf("migrations: lock %s is held by another migrator", lockName)
	}
	defer func() {
		_, rerr := conn.ExecContext(context.WithoutCancel(ctx), `SELECT RELEASE_LOCK(?)`, lockName)
		err = errors.Join(err, rerr)
	}()
	if _, err := conn.ExecContext(ctx, createVersionTable); err != nil {
		return fmt.Errorf("migrations: create version table: %w", err)
	}
	st, err := m.status(ctx, conn)
	if err != nil {
		return err
	}
	return fn(conn, st)
}

func (m *Migrator) apply(ctx context.Context, conn *sql.Conn, version int, script string, up bool) error {
	if _, err := conn.ExecContext(ctx, markDirty, version); err != nil {
		return err
	}
	for _, stmt := range Statements(script) {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("statement %q: %w", firstLine(stmt), err)
		}
	}
	if up {
		_, err := conn.ExecContext(ctx, markClean, version)
		return err
	}
	_, err := conn.ExecContext(ctx, deleteVersion, version)
	return err
}

// Statements splits a migration script into statements: each ends with a
// semicolon at the end of a line; lines starting with "--" are comments.
func Statements(script string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(script, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
