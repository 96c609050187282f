package main

import (
	"context"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/metrics"
	"github.com/txmsg/txmsg/internal/procs"
	"github.com/txmsg/txmsg/relay"
	"github.com/txmsg/txmsg/txmsgprom"
)

const relaySynopsis = `relay --dsn DSN --brokers HOST:PORT[,...] [--config FILE] [flags]

Relays the transactional outbox to Kafka until SIGINT or SIGTERM, then
releases its shard leases and exits 0. Serves /healthz, /readyz and /metrics
on metrics.listen. See configs/relay.yaml for every key.`

func runRelay(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("relay", relaySynopsis, e)
	loader := config.NewRelay(fs)
	cfg, err := loadDaemon(fs, loader, args)
	if err != nil {
		return err
	}
	var level slog.LevelVar
	log := newLogger(e.stderr, cfg.Log, &level)
	db, err := connectDaemon(ctx, cfg.DB, cfg.Kafka, kafkax.Security{TLS: cfg.Relay.TLS, SASL: cfg.Relay.SASL})
	if err != nil {
		return err
	}
	defer db.Close()
	log.Info("txmsg relay started", slog.String("version", versionString()), slog.String("db", cfg.DB.Addr),
		slog.String("brokers", strings.Join(cfg.Kafka.Brokers, ",")), slog.Int("shards", cfg.Relay.Shards), slog.String("owner", cfg.Relay.Owner))
	reg := metrics.NewRegistry()
	m, err := txmsgprom.NewRelay(reg)
	if err != nil {
		return err
	}
	engine, err := relay.New(db, cfg.Relay, relay.WithLogger(log), relay.WithHooks(m))
	if err != nil {
		return err
	}
	run := engine.Run
	if e.fitProcs {
		run = func(ctx context.Context) error {
			go procs.Govern(ctx, log)
			return engine.Run(ctx)
		}
	}
	return runDaemon(ctx, log, &level, cfg.Metrics, reg, engine.Ready, run,
		func(ctx context.Context, apply func(config.Log)) error {
			return loader.Watch(ctx, log, func(c config.Relay) { apply(c.Log) })
		})
}

// runDaemon runs main until ctx ends or main returns, next to the metrics
// server (unless disabled) and a config watcher that applies log.level. It
// returns main's error, or the first error of the others.
func runDaemon(ctx context.Context, log *slog.Logger, level *slog.LevelVar, mc config.Metrics, reg *prometheus.Registry,
	ready func() bool, main func(context.Context) error, watch func(context.Context, func(config.Log)) error) error {
	var srv *metrics.Server
	if mc.Listen != "" {
		s, err := metrics.NewServer(mc.Listen, reg, ready, log)
		if err != nil {
			return err
		}
		srv = s
		log.Info("serving /healthz, /readyz, /metrics", slog.String("addr", s.Addr()))
	}
	g, gctx := errgroup.WithContext(ctx)
	runCtx, stop := context.WithCancel(gctx)
	defer stop()
	g.Go(func() error {
		// When main returns, for whatever reason, the helpers stop too.
		defer stop()
		return main(runCtx)
	})
	if srv != nil {
		g.Go(func() error { return srv.Run(runCtx) })
	}
	g.Go(func() error {
		err := watch(runCtx, func(c config.Log) {
			if c.Level != level.Level() {
				log.Info("log level changed", slog.String("from", level.Level().String()), slog.String("to", c.Level.String()))
				level.Set(c.Level)
			}
			log.Info("config file reloaded: log.level applies now, other keys on restart")
		})
		if err != nil {
			// Not fatal: the daemon runs on with the configuration it has.
			log.Warn("config: not watching the file for changes", slog.Any("err", err))
		}
		return nil
	})
	return g.Wait()
}
