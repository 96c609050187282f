package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/consumer"
	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/internal/metrics"
	"github.com/txmsg/txmsg/internal/sqlx"
	"github.com/txmsg/txmsg/migrations"
	"github.com/txmsg/txmsg/outbox"
	"github.com/txmsg/txmsg/relay"
	"github.com/txmsg/txmsg/txmsgprom"
)

const devSynopsis = `dev [--dsn DSN] [--duration D] [--rate N] [flags]

Runs the whole outbox path in one process: an in-memory Kafka (kfake), the
migrations, a relay, a producer writing demo_orders rows plus an outbox message
per order in one transaction (rolling back about 10% on purpose), and a
consumer group reading the messages back. Prints a progress line every second.
On Ctrl-C (or after --duration) it stops producing, lets the relay and the
consumer drain, and exits 0 when every committed message arrived and no rolled
back one did; 1 otherwise. The database is created if missing.`

// devTopic is the topic the demo publishes to.
const devTopic = "orders"

const createDemoOrders = `CREATE TABLE IF NOT EXISTS demo_orders (
  id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  run          VARCHAR(32)     NOT NULL,
  amount_cents INT UNSIGNED    NOT NULL,
  created_at   DATETIME(6)     NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB`

const insertDemoOrder = `INSERT INTO demo_orders (run, amount_cents, created_at) VALUES (?, ?, UTC_TIMESTAMP(6))`

type devFlags struct {
	dsn        string
	listen     string
	partitions int
	duration   time.Duration
	rate       float64
	rollback   float64
	producers  int
	drain      time.Duration
	level      string
	metrics    string
}

func runDev(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("dev", devSynopsis, e)
	var f devFlags
	fs.StringVar(&f.dsn, "dsn", "root@tcp(127.0.0.1:3306)/txmsg_dev?parseTime=true", "MySQL/MariaDB DSN; the database is created if missing")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:0", "address of the embedded Kafka; port 0 picks a free one")
	fs.IntVar(&f.partitions, "partitions", 6, "partitions of the orders topic")
	fs.DurationVar(&f.duration, "duration", 0, "produce for this long, then drain and exit; 0 runs until Ctrl-C")
	fs.Float64Var(&f.rate, "rate", 200, "orders per second")
	fs.Float64Var(&f.rollback, "rollback", 0.1, "fraction of transactions rolled back on purpose")
	fs.IntVar(&f.producers, "producers", 4, "concurrent producer transactions")
	fs.DurationVar(&f.drain, "drain", 30*time.Second, "how long to wait for the relay and consumer to catch up at the end")
	fs.StringVar(&f.level, "log.level", "warn", "log level of the relay and consumer: debug, info, warn, error")
	fs.StringVar(&f.metrics, "metrics.listen", "", "serve /healthz, /readyz and /metrics here, e.g. 127.0.0.1:9464; empty: off")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	var level slog.Level
	switch {
	case level.UnmarshalText([]byte(f.level)) != nil:
		return usagef("--log.level %q: want debug, info, warn or error", f.level)
	case f.duration < 0:
		return usagef("--duration %v: want 0 (until Ctrl-C) or more", f.duration)
	case f.rate <= 0:
		return usagef("--rate %v: want more than 0", f.rate)
	case f.rollback < 0 || f.rollback >= 1:
		return usagef("--rollback %v: want 0 to less than 1", f.rollback)
	case f.producers < 1 || f.producers > 64:
		return usagef("--producers %d: want 1 to 64", f.producers)
	case f.drain <= 0:
		return usagef("--drain %v: want more than 0", f.drain)
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	d := &demo{
		flags:      f,
		log:        log,
		run:        "dev" + strconv.FormatInt(time.Now().UnixMilli(), 36),
		committed:  map[string]bool{},
		rolledBack: map[string]bool{},
		consumed:   map[string]bool{},
	}
	return d.main(ctx, e)
}

// demo is one run of `txmsg dev`.
type demo struct {
	flags devFlags
	log   *slog.Logger
	run   string // prefixes this run's message ids

	produced atomic.Int64 // transactions begun
	relayed  atomic.Int64 // records Kafka acknowledged (relay hook)

	mu         sync.Mutex
	committed  map[string]bool // ids whose transaction committed
	rolledBack map[string]bool // ids whose transaction rolled back
	uncertain  int             // commits that failed ambiguously
	consumed   map[string]bool // ids of this run read back
	phantoms   []string        // rolled-back ids that were read back
}

// devCounters is what the progress line shows.
type devCounters struct {
	produced, committed, rolledBack, uncertain, relayed, consumed, phantoms, missing int64
}

func (d *demo) counters() devCounters {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := devCounters{
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

func (c devCounters) String() string {
	return fmt.Sprintf("produced %d (committed %d, rolled back %d) | relayed %d | consumed %d | lag %d | phantoms %d",
		c.produced, c.committed, c.rolledBack, c.relayed, c.consumed, c.missing, c.phantoms)
}

func (d *demo) main(ctx context.Context, e *env) error {
	db, err := d.openDatabase(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	kc, err := startKafka(d.flags.listen, d.flags.partitions, devTopic)
	if err != nil {
		return err
	}
	defer kc.Close()
	brokers := kc.ListenAddrs()
	fmt.Fprintf(e.stderr, "txmsg dev: Kafka (kfake, in memory) on %s; database %s; run %s\n",
		brokers[0], config.MaskDSN(d.flags.dsn), d.run)

	reg := metrics.NewRegistry()
	rm, err := txmsgprom.NewRelay(reg)
	if err != nil {
		return err
	}
	cm, err := txmsgprom.NewConsumer(reg)
	if err != nil {
		return err
	}
	engine, err := relay.New(db, relay.Config{Brokers: brokers, Owner: "txmsg-" + d.run, LeaseTTL: 3 * time.Second},
		relay.WithLogger(d.log), relay.WithHooks(rm, relayCounter{&d.relayed}))
	if err != nil {
		return err
	}
	cons, err := consumer.New(brokers, "txmsg-"+d.run, []string{devTopic},
		consumer.WithLogger(d.log), consumer.WithHooks(cm), consumer.WithConcurrency(8),
		consumer.WithGroupTimeouts(6*time.Second, time.Second, 6*time.Second, 500*time.Millisecond))
	if err != nil {
		return err
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
	wg.Go(func() error { return engine.Run(wctx) })
	wg.Go(func() error { return cons.Run(wctx, consumer.HandlerFunc(d.handle)) })
	if d.flags.metrics != "" {
		srv, err := metrics.NewServer(d.flags.metrics, reg, engine.Ready, d.log)
		if err != nil {
			stopWorkers()
			return errors.Join(err, wg.Wait())
		}
		fmt.Fprintf(e.stderr, "txmsg dev: metrics on http://%s/metrics\n", srv.Addr())
		wg.Go(func() error { return srv.Run(wctx) })
	}

	produce, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	defer context.AfterFunc(wctx, stopProducing)()
	if d.flags.duration > 0 {
		var cancel context.CancelFunc
		produce, cancel = context.WithTimeout(produce, d.flags.duration)
		defer cancel()
	}
	progress := newProgress(e.stderr)
	perr := d.produce(produce, db, pub, progress, wctx)
	progress.note("txmsg dev: producer stopped; draining the relay and the consumer")
	d.waitDrained(wctx, progress)
	progress.done()
	stopWorkers()
	werr := wg.Wait()

	c := d.counters()
	fmt.Fprintf(e.stdout, "summary: committed=%d rolled_back=%d uncertain=%d relayed=%d consumed=%d phantoms=%d missing=%d\n",
		c.committed, c.rolledBack, c.uncertain, c.relayed, c.consumed, c.phantoms, c.missing)
	var errs []error
	if perr != nil {
		errs = append(errs, perr)
	}
	if werr != nil {
		errs = append(errs, werr)
	}
	if c.phantoms > 0 {
		d.mu.Lock()
		errs = append(errs, fmt.Errorf("%d rolled-back messages were consumed (phantoms), first %s", c.phantoms, d.phantoms[0]))
		d.mu.Unlock()
	}
	if c.missing > 0 {
		errs = append(errs, fmt.Errorf("%d committed messages not consumed within --drain %v", c.missing, d.flags.drain))
	}
	return errors.Join(errs...)
}

// openDatabase creates the demo database if missing, migrates it and
// creates the demo_orders table.
func (d *demo) openDatabase(ctx context.Context) (*sql.DB, error) {
	mc, err := mysql.ParseDSN(d.flags.dsn)
	if err != nil {
		return nil, usagef("--dsn %q: %v", config.MaskDSN(d.flags.dsn), err)
	}
	name := mc.DBName
	if !sqlx.ValidIdent(name) {
		return nil, usagef("--dsn %q: database name %q: want letters, digits and underscores", config.MaskDSN(d.flags.dsn), name)
	}
	mc.ParseTime = true
	mc.Loc = time.UTC
	mc.DBName = ""
	server := config.DB{DSN: mc.FormatDSN(), Addr: mc.Addr, MaxOpenConns: 2, ConnectTimeout: 5 * time.Second}
	admin, err := openDB(ctx, server)
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
	db, err := openDB(ctx, config.DB{DSN: mc.FormatDSN(), Addr: mc.Addr, MaxOpenConns: 32, ConnectTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	m, err := migrations.New(mc.FormatDSN())
	if err == nil {
		_, err = m.Up(ctx)
		err = errors.Join(err, m.Close())
	}
	if err == nil {
		_, err = db.ExecContext(ctx, createDemoOrders)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("prepare database %s: %w", name, err)
	}
	return db, nil
}

// produce runs the producers until ctx ends, printing progress every second.
// Transactions under way when ctx ends still finish, on workers.
func (d *demo) produce(ctx context.Context, db *sql.DB, pub *outbox.Publisher, p *progress, workers context.Context) error {
	lim := rate.NewLimiter(rate.Limit(d.flags.rate), max(1, int(d.flags.rate/10)))
	g, gctx := errgroup.WithContext(ctx)
	for range d.flags.producers {
		g.Go(func() error {
			for lim.Wait(gctx) == nil {
				if err := d.order(workers, db, pub); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-tick.C:
				p.show(d.counters().String())
			}
		}
	})
	return g.Wait()
}

// order writes one order and its message in one transaction, and rolls it
// back instead of committing for a --rollback fraction of orders.
func (d *demo) order(ctx context.Context, db *sql.DB, pub *outbox.Publisher) error {
	d.produced.Add(1)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin order transaction: %w", err)
	}
	defer tx.Rollback()
	amount := 100 + rand.IntN(100000)
	res, err := tx.ExecContext(ctx, insertDemoOrder, d.run, amount)
	if err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	orderID, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	id := d.run + "-" + strconv.FormatInt(orderID, 10)
	msg := txmsg.Message{
		ID:    id,
		Topic: devTopic,
		Key:   []byte("order-" + strconv.FormatInt(orderID, 10)),
		Value: fmt.Appendf(nil, `{"order":%d,"amount_cents":%d,"run":%q}`, orderID, amount, d.run),
	}
	if err := pub.Publish(ctx, tx, msg); err != nil {
		return fmt.Errorf("publish order %d: %w", orderID, err)
	}
	if rand.Float64() < d.flags.rollback {
		// Recorded before the rollback: a consumer seeing the id at any
		// time after this is a phantom.
		d.mu.Lock()
		d.rolledBack[id] = true
		d.mu.Unlock()
		return tx.Rollback()
	}
	err = tx.Commit()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		// The commit may or may not have happened: count it as neither.
		d.uncertain++
		d.log.Warn("commit failed; outcome unknown", slog.String("msg_id", id), slog.Any("err", err))
		return nil
	}
	d.committed[id] = true
	return nil
}

// handle is the consumer's handler: it records the id and flags phantoms.
func (d *demo) handle(_ context.Context, m consumer.Message) error {
	id := m.ID
	if !strings.HasPrefix(id, d.run+"-") {
		return nil // left over from an earlier run
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rolledBack[id] && !d.consumed[id] {
		d.phantoms = append(d.phantoms, id)
		d.log.Error("PHANTOM: consumed a message whose transaction rolled back", slog.String("msg_id", id))
	}
	d.consumed[id] = true
	return nil
}

// waitDrained waits until every committed message was consumed, --drain
// passes or workers ends (the relay or the consumer failed). A second Ctrl-C
// ends the process at once.
func (d *demo) waitDrained(workers context.Context, p *progress) {
	deadline := time.Now().Add(d.flags.drain)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for time.Now().Before(deadline) && workers.Err() == nil {
		c := d.counters()
		if c.missing == 0 {
			p.show(c.String())
			return
		}
		if time.Since(last) >= time.Second {
			p.show(c.String())
			last = time.Now()
		}
		<-tick.C
	}
	p.show(d.counters().String())
}

// relayCounter counts the records the relay published, for the progress
// line.
type relayCounter struct{ n *atomic.Int64 }

// Published implements relay.PublishedHook.
func (r relayCounter) Published(_, _ string, n int) { r.n.Add(int64(n)) }

// progress prints a status line: rewritten in place on a terminal, one line
// per update otherwise.
type progress struct {
	w        io.Writer
	terminal bool
	shown    bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progress) show(line string) {
	if p.terminal {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.shown = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// note prints a line of its own.
func (p *progress) note(line string) {
	p.done()
	fmt.Fprintln(p.w, line)
}

// done ends an in-place line.
func (p *progress) done() {
	if p.terminal && p.shown {
		fmt.Fprintln(p.w)
		p.shown = false
	}
}
