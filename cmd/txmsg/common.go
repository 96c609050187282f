package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/txmsg/txmsg/internal/config"
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
// is migrated, and a Kafka broker answers. It returns the open pool.
func connectDaemon(ctx context.Context, dc config.DB, kc config.Kafka) (*sql.DB, error) {
	db, err := openDB(ctx, dc)
	if err != nil {
		return nil, err
	}
	if err := checkSchema(ctx, db, dc.Addr); err != nil {
		db.Close()
		return nil, err
	}
	if err := checkKafka(ctx, kc); err != nil {
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
func openDB(ctx context.Context, c config.DB) (*sql.DB, error) {
	db, err := sql.Open("mysql", c.DSN)
	if err != nil {
		return nil, fmt.Errorf("database at %s: %w", c.Addr, err)
	}
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

// checkKafka dials each broker within c.DialTimeout and succeeds as soon as
// one answers: one reachable bootstrap broker is enough for a client.
func checkKafka(ctx context.Context, c config.Kafka) error {
	d := net.Dialer{Timeout: c.DialTimeout}
	var errs []string
	for _, b := range c.Brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			conn.Close()
			return nil
		}
		errs = append(errs, err.Error())
	}
	return fmt.Errorf("Kafka brokers %s unreachable: %s", strings.Join(c.Brokers, ","), strings.Join(errs, "; "))
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
