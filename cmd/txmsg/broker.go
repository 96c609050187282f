package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/txmsg/txmsg/broker"
	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/metrics"
	"github.com/txmsg/txmsg/txmsgprom"
)

const brokerSynopsis = `broker --dsn DSN --brokers HOST:PORT[,...] [--listen :7070] [--config FILE] [flags]

Serves the half-message HTTP API, checks back on prepared messages nobody
resolved, and relays committed half messages to Kafka, until SIGINT or
SIGTERM. Serves /healthz, /readyz and /metrics on metrics.listen. See
configs/broker.yaml for every key.`

func runBroker(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("broker", brokerSynopsis, e)
	loader := config.NewBroker(fs)
	cfg, err := loadDaemon(fs, loader, args)
	if err != nil {
		return err
	}
	var level slog.LevelVar
	log := newLogger(e.stderr, cfg.Log, &level)
	db, err := connectDaemon(ctx, cfg.DB, cfg.Kafka, kafkax.Security{TLS: cfg.Broker.Relay.TLS, SASL: cfg.Broker.Relay.SASL})
	if err != nil {
		return err
	}
	defer db.Close()
	log.Info("txmsg broker started", slog.String("version", versionString()), slog.String("db", cfg.DB.Addr),
		slog.String("brokers", strings.Join(cfg.Kafka.Brokers, ",")), slog.Int("shards", cfg.Broker.Relay.Shards))
	reg := metrics.NewRegistry()
	bm, err := txmsgprom.NewBroker(reg)
	if err != nil {
		return err
	}
	rm, err := txmsgprom.NewRelay(reg)
	if err != nil {
		return err
	}
	// Bind here, so that a taken address fails start-up, and the address
	// (port 0 picks one) can be logged.
	ln, err := net.Listen("tcp", cfg.Broker.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (broker.listen): %w", cfg.Broker.Listen, err)
	}
	srv, err := broker.NewServer(db, cfg.Broker, broker.WithLogger(log), broker.WithHooks(bm),
		broker.WithRelayHooks(rm), broker.WithListener(ln))
	if err != nil {
		ln.Close()
		return err
	}
	log.Info("serving the half-message API", slog.String("addr", ln.Addr().String()))
	return runDaemon(ctx, log, &level, cfg.Metrics, reg, srv.Ready, srv.Run,
		func(ctx context.Context, apply func(config.Log)) error {
			return loader.Watch(ctx, log, func(c config.Broker) { apply(c.Log) })
		})
}
