package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/internal/demo"
	"github.com/txmsg/txmsg/internal/sqlx"
	"github.com/txmsg/txmsg/migrations"
)

const devSynopsis = `dev [--dsn DSN] [--duration D] [--rate N] [flags]

Runs the whole outbox path in one process: an in-memory Kafka (kfake), the
migrations, a relay, a producer writing demo_orders rows plus an outbox message
per order in one transaction (rolling back about 10% on purpose), and a
consumer group reading the messages back. Prints a progress line every second.
On Ctrl-C (or after --duration) it stops producing, lets the relay and the
consumer drain, and exits 0 when every committed message arrived and no rolled
back one did; 1 otherwise. The database is created if missing.`

func runDev(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("dev", devSynopsis, e)
	var cfg demo.Config
	dsn := fs.String("dsn", "root@tcp(127.0.0.1:3306)/txmsg_dev?parseTime=true", "MySQL/MariaDB DSN; the database is created if missing")
	listen := fs.String("listen", "127.0.0.1:0", "address of the embedded Kafka; port 0 picks a free one")
	partitions := fs.Int("partitions", 6, "partitions of the orders topic")
	fs.DurationVar(&cfg.Duration, "duration", 0, "produce for this long, then drain and exit; 0 runs until Ctrl-C")
	fs.Float64Var(&cfg.Rate, "rate", 200, "orders per second")
	fs.Float64Var(&cfg.Rollback, "rollback", 0.1, "fraction of transactions rolled back on purpose")
	fs.IntVar(&cfg.Producers, "producers", 4, "concurrent producer transactions")
	fs.DurationVar(&cfg.Drain, "drain", 30*time.Second, "how long to wait for the relay and consumer to catch up at the end")
	levelName := fs.String("log.level", "warn", "log level of the relay and consumer: debug, info, warn, error")
	fs.StringVar(&cfg.MetricsListen, "metrics.listen", "", "serve /healthz, /readyz and /metrics here, e.g. 127.0.0.1:9464; empty: off")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	var level slog.Level
	if level.UnmarshalText([]byte(*levelName)) != nil {
		return usagef("--log.level %q: want debug, info, warn or error", *levelName)
	}
	cfg.Log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	d, err := demo.New(cfg)
	if err != nil {
		return usageError{err}
	}
	db, err := openDevDatabase(ctx, *dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	kc, err := startKafka(*listen, *partitions, demo.Topic)
	if err != nil {
		return err
	}
	defer kc.Close()
	brokers := kc.ListenAddrs()
	fmt.Fprintf(e.stderr, "txmsg dev: Kafka (kfake, in memory) on %s; database %s; run %s\n",
		brokers[0], config.MaskDSN(*dsn), d.ID())
	return d.Run(ctx, db, brokers, e.stdout, e.stderr)
}

// openDevDatabase creates the demo database if missing, migrates it and
// opens it.
func openDevDatabase(ctx context.Context, dsn string) (*sql.DB, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, usagef("--dsn %q: %v", config.MaskDSN(dsn), err)
	}
	name := mc.DBName
	if !sqlx.ValidIdent(name) {
		return nil, usagef("--dsn %q: database name %q: want letters, digits and underscores", config.MaskDSN(dsn), name)
	}
	mc.ParseTime = true
	mc.Loc = time.UTC
	mc.DBName = ""
	admin, err := openDB(ctx, config.DB{DSN: mc.FormatDSN(), Addr: mc.Addr, MaxOpenConns: 2, ConnectTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	// name is a checked identifier: no quoting issue.
	_, err = admin.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS "+name)
	admin.Close()
	if err != nil {
		return nil, fmt.Errorf("create database %s: %w", name, err)
	}
	mc.DBName = name
	m, err := migrations.New(mc.FormatDSN())
	if err != nil {
		return nil, err
	}
	_, err = m.Up(ctx)
	if err = errors.Join(err, m.Close()); err != nil {
		return nil, fmt.Errorf("migrate database %s: %w", name, err)
	}
	return openDB(ctx, config.DB{DSN: mc.FormatDSN(), Addr: mc.Addr, MaxOpenConns: 32, ConnectTimeout: 5 * time.Second})
}
