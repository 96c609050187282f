package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Topics of the soak: outbox and half messages go to their own topic, read
// by the consumers; the doomed topic receives outbox messages only and is
// deleted now and then.
const (
	topicOutbox = "chaos.outbox"
	topicHalf   = "chaos.half"
	topicDoomed = "chaos.doomed"
)

// soak is one run.
type soak struct {
	cfg        Config
	ownWorkdir bool // the workdir was made by the run
	log        *slog.Logger
	rng        *rand.Rand // the fault schedule's; used by the fault goroutine only
	start      time.Time
	db         *database
	kafka      *cluster
	fleet      *fleet
	outbox     *outboxProducer
	half       *halfProducer
	faults     atomic.Int64

	mu      sync.Mutex
	deleted []record // records of deleted incarnations of the doomed topic
}

// Run runs one soak and returns its figures. An error means the soak could
// not run as planned (no database, no kcat...), not that txmsg failed it:
// that is Figures.OK. Run returns within cfg.Duration + cfg.Drain + 3m.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (Figures, error) {
	if err := cfg.Validate(); err != nil {
		return Figures{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+cfg.Drain+3*time.Minute)
	defer cancel()
	s := &soak{cfg: cfg, log: log, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed>>1)), start: time.Now()}
	log.Info("chaos soak", slog.Duration("duration", cfg.Duration), slog.Uint64("seed", cfg.Seed))
	if err := s.setUp(ctx); err != nil {
		return Figures{}, errors.Join(err, s.tearDown(false))
	}
	fig, err := s.main(ctx)
	return fig, errors.Join(err, s.tearDown(err == nil && fig.OK()))
}

// setUp makes the workdir, the database, the cluster, the producers and
// the processes.
func (s *soak) setUp(ctx context.Context) error {
	if s.cfg.Workdir == "" {
		dir, err := os.MkdirTemp("", "txmsg-chaos-")
		if err != nil {
			return fmt.Errorf("chaos: workdir: %w", err)
		}
		s.cfg.Workdir, s.ownWorkdir = dir, true
	} else if err := os.MkdirAll(s.cfg.Workdir, 0o755); err != nil {
		return fmt.Errorf("chaos: workdir: %w", err)
	}
	db, err := createDatabase(ctx, s.cfg.DSN, s.cfg.Txmsg)
	if err != nil {
		return err
	}
	s.db = db
	if s.kafka, err = startCluster(6, s.cfg.LeaseTTL+time.Second, topicDoomed); err != nil {
		return err
	}
	brokerAt, err := freeAddrs(s.cfg.Brokers)
	if err != nil {
		return err
	}
	run := "c" + strconv.FormatInt(time.Now().UnixMilli(), 36)
	s.outbox = &outboxProducer{db: db.db, run: run, rate: s.cfg.Rate, workers: 4, topic: topicOutbox, doomed: topicDoomed}
	if s.half, err = newHalfProducer(ctx, db.db, brokerAt, run, topicHalf, s.cfg.HalfRate); err != nil {
		return err
	}
	tokenFile, err := writeOperatorToken(s.cfg.Workdir)
	if err != nil {
		return err
	}
	s.fleet = newFleet(ctx, s.log, fleetSpec{cfg: s.cfg, dsn: db.dsn, kafka: s.kafka.addr, workdir: s.cfg.Workdir,
		topics: []string{topicOutbox, topicHalf}, brokerAt: brokerAt, tokenFile: tokenFile})
	s.log.Info("set up", slog.String("database", db.name), slog.String("kafka", s.kafka.addr),
		slog.String("workdir", s.cfg.Workdir))
	return s.fleet.startAll()
}

// main produces under faults, heals, drains and verifies.
func (s *soak) main(ctx context.Context) (Figures, error) {
	pctx, stop := context.WithTimeout(ctx, s.cfg.Duration)
	var wg sync.WaitGroup
	wg.Go(func() { s.outbox.produce(pctx) })
	wg.Go(func() { s.half.produce(pctx) })
	wg.Go(func() { s.strikeFaults(pctx) })
	wg.Wait()
	stop()
	if err := ctx.Err(); err != nil {
		return Figures{}, fmt.Errorf("chaos: interrupted: %w", err)
	}
	s.log.Info("producers stopped; healing and draining",
		slog.Int64("outbox_attempts", s.outbox.stats.attempts.Load()), slog.Int64("outbox_failed", s.outbox.stats.failed.Load()),
		slog.Int64("half_attempts", s.half.stats.attempts.Load()), slog.Int64("half_failed", s.half.stats.failed.Load()),
		slog.Int64("half_end_calls_failed", s.half.endFailed.Load()))
	s.kafka.heal()
	if err := s.fleet.heal(); err != nil {
		return Figures{}, err
	}
	drained := s.drain(ctx)
	ev, err := s.collect(ctx)
	if err != nil {
		return Figures{}, err
	}
	fig := ev.figures(s.log)
	fig.Faults, fig.Exits, fig.CommitsDropped = int(s.faults.Load()), int(s.fleet.exits.Load()), int(s.half.dropped.Load())
	fig.DrainTime = drained
	return fig, nil
}

// tearDown stops everything; after a failed run each process first prints
// its goroutines' stacks into its log. The database is dropped unless Keep
// is set; a workdir the run made is removed unless the run failed or Keep
// is set.
func (s *soak) tearDown(passed bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if s.fleet != nil && !passed {
		// A stall is a goroutine waiting where it should not: the stacks
		// show which, in the logs the failed run keeps.
		errs = append(errs, s.fleet.dumpStacks())
	}
	if s.fleet != nil {
		errs = append(errs, s.fleet.stop())
	}
	if s.half != nil {
		errs = append(errs, s.half.close(ctx))
	}
	if s.kafka != nil {
		s.kafka.close()
	}
	if s.db != nil {
		errs = append(errs, s.db.close(ctx, s.cfg.Keep))
		if s.cfg.Keep {
			s.log.Info("database kept", slog.String("database", s.db.name))
		}
	}
	switch {
	case s.ownWorkdir && passed && !s.cfg.Keep:
		errs = append(errs, os.RemoveAll(s.cfg.Workdir))
	case s.cfg.Workdir != "":
		s.log.Info("logs kept", slog.String("workdir", s.cfg.Workdir))
	}
	return errors.Join(errs...)
}
