package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/migrations"
)

// newLogger builds the daemon's logger; level is kept so that a config
// reload can change it.
func newLogger(w io.Writer, c config.Log, level *slog.LevelVar) *slog.Logger {
	level.Set(c.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// loadDaemon parses a daemon's args into fs, refuses positional arguments,
// and loads its configuration.
func loadDaemon[T any](fs *pflag.FlagSet, loader *config.Loader[T], args []string) (T, error) {
	var zero T
	if err := parse(fs, args); err != nil {
		return zero, err
	}
	if fs.NArg() > 0 {
		return zero, usagef("unexpected argument %q", fs.Arg(0))
	}
	return loader.Load()
}

// connectDaemon makes a daemon's start-up checks: the database answers and
// is migrated, and a Kafka broker accepts a connection with sec (TLS
// handshake and SASL authentication included). It returns the open pool.
func connectDaemon(ctx context.Context, dc config.DB, kc kafkax.Config, sec kafkax.Security) (*sql.DB, error) {
	db, err := openDB(ctx, dc)
	if err != nil {
		return nil, err
	}
	if err := checkSchema(ctx, db, dc.Addr); err != nil {
		db.Close()
		return nil, err
	}
	if err := kafkax.Ping(ctx, kc.Brokers, sec, kc.DialTimeout); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// openAdmin loads a one-shot command's configuration and opens its database.
func openAdmin(ctx context.Context, loader *config.Loader[config.Admin]) (*sql.DB, error) {
	cfg, err := loader.Load()
	if err != nil {
		return nil, err
	}
	return openDB(ctx, cfg.DB)
}

// openDB opens a pool on c and pings it within c.ConnectTimeout, so that an
// unreachable or misconfigured database fails start-up with its address.
// Its connections run with a strict sql_mode (config.DB.Connector).
func openDB(ctx context.Context, c config.DB) (*sql.DB, error) {
	conn, err := c.Connector()
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(c.MaxOpenConns)
	db.SetMaxIdleConns(c.MaxOpenConns)
	db.SetConnMaxLifetime(10 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, c.ConnectTimeout)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("database at %s unreachable: no answer within %v (db.connect_timeout)", c.Addr, c.ConnectTimeout)
		}
		return nil, fmt.Errorf("database at %s unreachable: %w", c.Addr, err)
	}
	return db, nil
}

// checkSchema fails unless every migration this binary embeds is applied
// cleanly, so that a daemon on an unmigrated database says so at start-up
// instead of failing on each query.
func checkSchema(ctx context.Context, db *sql.DB, addr string) error {
	all, err := migrations.All()
	if err != nil {
		return err
	}
	rows, err := db.QueryContext(ctx, `SELECT version, dirty FROM txmsg_schema_migrations`)
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == 1146 { // ER_NO_SUCH_TABLE
		return fmt.Errorf("database at %s has no txmsg schema: run 'txmsg migrate up' first", addr)
	}
	if err != nil {
		return fmt.Errorf("database at %s: read schema version: %w", addr, err)
	}
	defer rows.Close()
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		var dirty bool
		if err := rows.Scan(&v, &dirty); err != nil {
			return fmt.Errorf("database at %s: read schema version: %w", addr, err)
		}
		if dirty {
			return fmt.Errorf("database at %s: migration %04d failed half way: repair it, then run 'txmsg migrate force %d'", addr, v, v)
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("database at %s: read schema version: %w", addr, err)
	}
	var missing []string
	for _, m := range all {
		if !applied[m.Version] {
			missing = append(missing, fmt.Sprintf("%04d_%s", m.Version, m.Name))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("database at %s lacks migrations %s: run 'txmsg migrate up' first", addr, strings.Join(missing, ", "))
	}
	return nil
}
