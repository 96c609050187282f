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

	"github.com/txmsg/txmsg/internal/config"
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
