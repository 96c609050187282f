package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/txmsg/txmsg/consumer"
	"github.com/txmsg/txmsg/internal/metrics"
	"github.com/txmsg/txmsg/outbox"
	"github.com/txmsg/txmsg/relay"
	"github.com/txmsg/txmsg/txmsgprom"
)

// Topic is the topic the demo publishes to.
const Topic = "orders"

// Demo is one run of the demo.
type Demo struct {
	cfg Config
	log *slog.Logger
	id  string // prefixes this run's message ids

	produced atomic.Int64 // transactions begun
	relayed  atomic.Int64 // records Kafka acknowledged (relay hook)

	mu         sync.Mutex
	committed  map[string]bool // ids whose transaction committed
	rolledBack map[string]bool // ids whose transaction rolled back
	uncertain  int             // commits that failed ambiguously
	consumed   map[string]bool // ids of this run read back
	phantoms   []string        // rolled-back ids that were read back
}

// New validates cfg and returns a Demo.
func New(cfg Config) (*Demo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Demo{
		cfg:        cfg,
		log:        log,
		id:         "dev" + strconv.FormatInt(time.Now().UnixMilli(), 36),
		committed:  map[string]bool{},
		rolledBack: map[string]bool{},
		consumed:   map[string]bool{},
	}, nil
}

// ID names the run: its message ids, relay owner and consumer group carry it.
func (d *Demo) ID() string { return d.id }

// Run runs the demo once on db (migrated; Run creates its demo_orders table)
// and the Kafka brokers: it produces until ctx ends or Config.Duration
// passes, then lets the relay and the consumer drain for up to Config.Drain.
// It writes progress lines to status and a summary line to out, and returns
// nil only when every committed message arrived and no rolled-back one did.
func (d *Demo) Run(ctx context.Context, db *sql.DB, brokers []string, out, status io.Writer) error {
	if _, err := db.ExecContext(ctx, createDemoOrders); err != nil {
		return fmt.Errorf("demo: create demo_orders: %w", err)
	}
	pub, err := outbox.NewPublisher()
	if err != nil {
		return err
	}
	// The relay and the consumer outlive ctx (the first Ctrl-C): they drain
	// what was committed before the demo stops them. If one of them fails,
	// the producer stops too.
	workers, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	wg, wctx := errgroup.WithContext(workers)
	if err := d.startWorkers(wctx, wg, db, brokers, status); err != nil {
		stopWorkers()
		return errors.Join(err, wg.Wait())
	}
	perr := d.produceThenDrain(ctx, wctx, db, pub, status)
	stopWorkers()
	werr := wg.Wait()
	return d.verdict(out, perr, werr)
}

// startWorkers starts the relay, the consumer and, if asked, the metrics
// server on wg.
func (d *Demo) startWorkers(ctx context.Context, wg *errgroup.Group, db *sql.DB, brokers []string, status io.Writer) error {
	reg := metrics.NewRegistry()
	rm, err := txmsgprom.NewRelay(reg)
	if err != nil {
		return err
	}
	cm, err := txmsgprom.NewConsumer(reg)
	if err != nil {
		return err
	}
	engine, err := relay.New(db, relay.Config{Brokers: brokers, Owner: "txmsg-" + d.id, LeaseTTL: 3 * time.Second},
		relay.WithLogger(d.log), relay.WithHooks(rm, relayCounter{&d.relayed}))
	if err != nil {
		return err
	}
	cons, err := consumer.New(brokers, "txmsg-"+d.id, []string{Topic},
		consumer.WithLogger(d.log), consumer.WithHooks(cm), consumer.WithConcurrency(8),
		consumer.WithGroupTimeouts(6*time.Second, time.Second, 6*time.Second, 500*time.Millisecond))
	if err != nil {
		return err
	}
	wg.Go(func() error { return engine.Run(ctx) })
	wg.Go(func() error { return cons.Run(ctx, consumer.HandlerFunc(d.handle)) })
	if d.cfg.MetricsListen == "" {
		return nil
	}
	srv, err := metrics.NewServer(d.cfg.MetricsListen, reg, engine.Ready, d.log)
	if err != nil {
		return err
	}
	fmt.Fprintf(status, "txmsg dev: metrics on http://%s/metrics\n", srv.Addr())
	wg.Go(func() error { return srv.Run(ctx) })
	return nil
}

// produceThenDrain produces until ctx ends, Config.Duration passes or
// workers ends (the relay or the consumer failed), then waits for the
// drain. It returns the producers' error.
func (d *Demo) produceThenDrain(ctx, workers context.Context, db *sql.DB, pub *outbox.Publisher, status io.Writer) error {
	produce, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	defer context.AfterFunc(workers, stopProducing)()
	if d.cfg.Duration > 0 {
		var cancel context.CancelFunc
		produce, cancel = context.WithTimeout(produce, d.cfg.Duration)
		defer cancel()
	}
	p := newProgress(status)
	err := d.produce(produce, db, pub, p, workers)
	p.note("txmsg dev: producer stopped; draining the relay and the consumer")
	d.waitDrained(workers, p)
	p.done()
	return err
}

// verdict prints the summary and returns what went wrong, if anything.
func (d *Demo) verdict(out io.Writer, produceErr, workersErr error) error {
	c := d.counters()
	fmt.Fprintf(out, "summary: committed=%d rolled_back=%d uncertain=%d relayed=%d consumed=%d phantoms=%d missing=%d\n",
		c.committed, c.rolledBack, c.uncertain, c.relayed, c.consumed, c.phantoms, c.missing)
	errs := []error{produceErr, workersErr}
	if c.phantoms > 0 {
		d.mu.Lock()
		errs = append(errs, fmt.Errorf("%d rolled-back messages were consumed (phantoms), first %s", c.phantoms, d.phantoms[0]))
		d.mu.Unlock()
	}
	if c.missing > 0 {
		errs = append(errs, fmt.Errorf("%d committed messages not consumed within --drain %v", c.missing, d.cfg.Drain))
	}
	return errors.Join(errs...)
}

// counters is what the progress line shows.
type counters struct {
	produced, committed, rolledBack, uncertain, relayed, consumed, phantoms, missing int64
}

func (d *Demo) counters() counters {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := counters{
		produced:   d.produced.Load(),
		committed:  int64(len(d.committed)),
		rolledBack: int64(len(d.rolledBack)),
		uncertain:  int64(d.uncertain),
		relayed:    d.relayed.Load(),
		phantoms:   int64(len(d.phantoms)),
	}
	for id := range d.consumed {
		if d.committed[id] {
			c.consumed++
		}
	}
	c.missing = c.committed - c.consumed
	return c
}

func (c counters) String() string {
	return fmt.Sprintf("produced %d (committed %d, rolled back %d) | relayed %d | consumed %d | lag %d | phantoms %d",
		c.produced, c.committed, c.rolledBack, c.relayed, c.consumed, c.missing, c.phantoms)
}
