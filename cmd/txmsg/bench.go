package main

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/txmsg/txmsg/internal/bench"
	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/internal/kafkax"
)

const benchSynopsis = `bench latency|drain --dsn DSN --brokers HOST:PORT[,...] [--config FILE] [flags]

  latency  32 producers run BEGIN; INSERT; outbox.Publish; COMMIT at --rate
           for --warmup, then --duration measured, while the relay runs and
           a consumer group reads;
           then the same transactions with a direct Kafka produce after
           COMMIT (the dual write) as the baseline. Prints commit→read and
           transaction p50/p99 of both, and their ratios.
  drain    fills txmsg_outbox with each of --rows messages and drains it with
           the relay, then drains a table of the same shape with the naive
           SELECT … FOR UPDATE SKIP LOCKED → produce → DELETE loop. Prints
           msg/s of both, the ratio, peak RSS and server counters.

Reads the relay's configuration (--config, TXMSG_* env, flags). The relay
runs in-process unless --relay-bin names a txmsg binary, which is started as
'txmsg relay' with the same database, brokers, --config and relay.* flags.
With --relays N, N relays share the shards: latency measures once each holds
its fair share; drain starts them together on the backlog.
It writes to the database (txmsg_bench_* tables, the outbox) and creates
topics named txmsg-bench-*, deleted at the end where Kafka allows: point it
at a database no relay serves. Progress goes to stderr, the summary to stdout.`

func runBench(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("bench", benchSynopsis, e)
	loader := config.NewRelay(fs)
	producers := fs.Int("producers", 32, "latency: producer transactions running at once")
	rate := fs.Int("rate", 1000, "latency: messages per second over all producers")
	duration := fs.Duration("duration", 30*time.Second, "latency: how long each phase is measured")
	warmup := fs.Duration("warmup", 3*time.Second, "latency: how long each phase produces before it is measured (0: not at all)")
	rowsFlag := fs.String("rows", "100000", "drain: backlog sizes, comma-separated")
	valueBytes := fs.Int("value-bytes", 256, "size of each message's value")
	relayBin := fs.String("relay-bin", "", "run the relay as this txmsg binary instead of in-process")
	relays := fs.Int("relays", 1, "relays running side by side, sharing the shards")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "latency" && fs.Arg(0) != "drain") {
		return usagef("want 'bench latency' or 'bench drain'")
	}
	var rows []int
	for _, s := range strings.Split(*rowsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return usagef("--rows %q: want positive counts, comma-separated", *rowsFlag)
		}
		rows = append(rows, n)
	}
	switch {
	case *producers < 1 || *producers > 1000:
		return usagef("--producers %d: want 1 to 1000", *producers)
	case *rate < 1:
		return usagef("--rate %d: want at least 1", *rate)
	case *duration < time.Second:
		return usagef("--duration %v: want at least 1s", *duration)
	case *warmup < 0:
		return usagef("--warmup %v: want 0 or more", *warmup)
	case *valueBytes < 1:
		return usagef("--value-bytes %d: want at least 1", *valueBytes)
	case *relays < 1 || *relays > 64:
		return usagef("--relays %d: want 1 to 64", *relays)
	}
	cfg, err := loader.Load()
	if err != nil {
		return err
	}
	var level slog.LevelVar
	if !fs.Changed("log.level") && os.Getenv("TXMSG_LOG_LEVEL") == "" {
		cfg.Log.Level = slog.LevelWarn
	}
	log := newLogger(e.stderr, cfg.Log, &level)
	sec := kafkax.Security{TLS: cfg.Relay.TLS, SASL: cfg.Relay.SASL}
	db, err := connectDaemon(ctx, cfg.DB, cfg.Kafka, sec)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(max(cfg.DB.MaxOpenConns, *producers+4))
	db.SetMaxIdleConns(max(cfg.DB.MaxOpenConns, *producers+4))
	benv := &bench.Env{DB: db, Brokers: cfg.Kafka.Brokers, Security: sec, Relay: cfg.Relay, Relays: *relays, Progress: e.stderr, Log: log}
	if *relayBin != "" {
		benv.RelayCommand, benv.RelayEnv = relayCommand(*relayBin, loader.File(), fs, cfg)
	} else {
		rdb, err := openDB(ctx, cfg.DB)
		if err != nil {
			return err
		}
		defer rdb.Close()
		benv.RelayDB = rdb
	}
	if fs.Arg(0) == "latency" {
		w := *warmup
		if w == 0 {
			w = -1 // none, where the config's zero is the default
		}
		res, err := bench.Latency(ctx, benv, bench.LatencyConfig{Producers: *producers, Rate: *rate, Duration: *duration, Warmup: w, ValueBytes: *valueBytes})
		if err != nil {
			return err
		}
		res.Print(e.stdout)
		return nil
	}
	res, err := bench.Drain(ctx, benv, bench.DrainConfig{Rows: rows, ValueBytes: *valueBytes})
	if err != nil {
		return err
	}
	res.Print(e.stdout)
	return nil
}

// relayCommand is `bin relay` with the benchmark's database, brokers,
// configuration file and relay.* flags, quiet but for warnings and without
// a metrics server.
func relayCommand(bin, file string, fs *pflag.FlagSet, cfg config.Relay) (args, env []string) {
	args = []string{bin, "relay"}
	if file != "" {
		args = append(args, "--config", file)
	}
	fs.Visit(func(f *pflag.Flag) {
		// The DSN travels in the environment, resolved (from db.dsn_file too).
		if f.Name != "db.dsn_file" && (strings.HasPrefix(f.Name, "relay.") || strings.HasPrefix(f.Name, "kafka.") || strings.HasPrefix(f.Name, "db.")) {
			args = append(args, "--"+f.Name+"="+f.Value.String())
		}
	})
	env = []string{"TXMSG_DB_DSN=" + cfg.DB.DSN, "TXMSG_DB_DSN_FILE=", "TXMSG_KAFKA_BROKERS=" + strings.Join(cfg.Kafka.Brokers, ","),
		"TXMSG_METRICS_LISTEN=", "TXMSG_LOG_LEVEL=" + cfg.Log.Level.String()}
	return args, env
}
