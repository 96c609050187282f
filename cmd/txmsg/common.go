package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

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
	err := migrations.Check(ctx, db)
	switch {
	case errors.Is(err, migrations.ErrNoSchema):
		return fmt.Errorf("database at %s has no txmsg schema: run 'txmsg migrate up' first", addr)
	case err != nil:
		return fmt.Errorf("database at %s: %w", addr, err)
	}
	return nil
}
