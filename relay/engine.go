package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/sqlx"
)

// Engine drains its Sources into Kafka. Build it with New and run it with Run.
type Engine struct {
	db      *sql.DB
	cfg     Config
	log     *slog.Logger
	metrics hooks
	sources []Source
	// producer sends every produce request; it never retries on its own.
	producer *kafkax.Producer
	// marker marks delivered rows, several rounds per transaction.
	marker *marker
	// slots holds a token per round under way: at most Config.Concurrency.
	slots chan struct{}
	// maxMessage is the largest message (key, value, headers) sent, and
	// maxRequest the most bytes one produce request carries.
	maxMessage int64
	maxRequest int64
	// epoch is the monotonic base for lease deadlines (wall-clock jumps do
	// not move them).
	epoch time.Time
	// wakes[source][shard] nudges an idle shard worker; made once in New,
	// then only sent to and received from.
	wakes map[string][]chan struct{}
	// inboxes[source][shard] holds the change probe's rows for the shard's
	// worker (see handoff); made once in New.
	inboxes map[string][]inbox
	// probesSent counts the change probes sent, and probesDone is the last
	// one whose rows were handed over (or that ended without).
	probesSent, probesDone atomic.Int64
	// settled[source] is the seq below which every row of a Seeker source
	// is final (see watchHorizon); made once in New.
	settled map[string]*atomic.Int64
	// fronts[source][shard] is where the shard's worker reads next while it
	// drains a backlog (noFront otherwise); see ahead. Made once in New.
	fronts map[string][]atomic.Int64
	// seen[source] is the highest seq the engine has read (a poll or the
	// change probe): taken before any later reading; made once in New.
	seen map[string]*atomic.Int64
	// busyFallback is how often an idle worker of a Busy source polls on
	// its own: busyFallback, but for tests.
	busyFallback time.Duration
	// pollInTx is set when a statement outside a transaction would read
	// uncommitted rows (the connections run at READ UNCOMMITTED). Then even
	// single-statement polls run in a transaction of their own (see
	// readPending). Set by Run before any round.
	pollInTx bool
	ready    atomic.Bool
	running  atomic.Bool
}

// Option configures an Engine.
type Option func(*Engine)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.log = l } }

// WithHooks adds measurement hooks (default: none); see Hook.
func WithHooks(hs ...Hook) Option { return func(e *Engine) { e.metrics = append(e.metrics, hs...) } }

// WithSources sets the sources to drain (default: the txmsg_outbox table,
// keeping delivered rows when Config.Retention is set).
func WithSources(srcs ...Source) Option { return func(e *Engine) { e.sources = srcs } }

// New fills the zero fields of cfg with their defaults (Config.WithDefaults),
// validates it and returns an Engine on db. It does not connect yet: Run
// does.
func New(db *sql.DB, cfg Config, opts ...Option) (*Engine, error) {
	if db == nil {
		return nil, errors.New("relay: nil *sql.DB")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	e := &Engine{db: db, cfg: cfg, epoch: time.Now(), slots: make(chan struct{}, cfg.Concurrency), marker: newMarker(db)}
	for _, o := range opts {
		o(e)
	}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(e.sources) == 0 {
		e.sources = []Source{NewOutboxSource(cfg.Retention > 0)}
	}
	e.wakes = map[string][]chan struct{}{}
	e.inboxes = map[string][]inbox{}
	e.busyFallback = busyFallback
	e.settled = map[string]*atomic.Int64{}
	e.seen = map[string]*atomic.Int64{}
	e.fronts = map[string][]atomic.Int64{}
	for _, s := range e.sources {
		if s == nil {
			return nil, errors.New("relay: sources: nil source")
		}
		if s.Name() == "" || len(s.Name()) > 16 || e.wakes[s.Name()] != nil {
			return nil, fmt.Errorf("relay: source %q: want a unique name of 1 to 16 characters", s.Name())
		}
		ws := make([]chan struct{}, cfg.Shards)
		for i := range ws {
			ws[i] = make(chan struct{}, 1)
		}
		e.wakes[s.Name()] = ws
		e.inboxes[s.Name()] = make([]inbox, cfg.Shards)
		e.settled[s.Name()] = &atomic.Int64{}
		e.seen[s.Name()] = &atomic.Int64{}
		fs := make([]atomic.Int64, cfg.Shards)
		for i := range fs {
			fs[i].Store(noFront)
		}
		e.fronts[s.Name()] = fs
	}
	wc := cfg.Writer
	if wc.Transport == nil {
		wc.Transport = kafkax.NewTransport(e.security())
	}
	if wc.BatchBytes <= 0 {
		wc.BatchBytes = 16 << 20
	}
	e.maxMessage = wc.BatchBytes
	e.maxRequest = min(wc.BatchBytes, maxRequestBytes)
	p, err := kafkax.NewProducer(cfg.Brokers, wc)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	e.producer = p
	return e, nil
}

// Ready reports whether Run has connected to the database and Kafka and
// completed its first lease round; it turns false again when Run returns.
func (e *Engine) Ready() bool { return e.ready.Load() }

// Wake tells the engine that shard of source has new deliverable rows, so an
// idle worker polls at once (the broker calls it after a commit); a worker
// whose rows the change probe hands over (a Handover source) waits for them
// instead. Unknown sources and shards are ignored; Wake never blocks.
func (e *Engine) Wake(source string, shard int) {
	ws := e.wakes[source]
	if shard < 0 || shard >= len(ws) {
		return
	}
	select {
	case ws[shard] <- struct{}{}:
	default:
	}
}

// connectTimeout bounds the start-up checks of the database and Kafka.
const connectTimeout = 10 * time.Second

// Run drains the sources until ctx ends, then shuts down: it stops claiming,
// lets each shard finish its round (marking what Kafka acknowledged within
// Config.ShutdownTimeout; rows not marked stay pending and are published
// again later), and releases each shard's lease once its round has ended. A
// produce request under way is never abandoned: it ends with its answer or at
// the round's deadline, before the lease could expire, so the relay taking
// the shard over cannot be overtaken by it; shutdown can take that long. It
// returns nil after a clean shutdown, or the start-up error when the database
// or Kafka cannot be reached. Run may be called once.
func (e *Engine) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("relay: Run called twice")
	}
	defer e.ready.Store(false)
	defer e.producer.Close()
	if err := e.preflight(ctx); err != nil {
		return err
	}
	// hard ends in-flight I/O: ShutdownTimeout after ctx, so batches under
	// way can finish and be marked.
	hard, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	stopHard := context.AfterFunc(ctx, func() {
		t := time.NewTimer(e.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			hardCancel()
		case <-hard.Done():
		}
	})
	defer stopHard()

	markStop := make(chan struct{})
	markDone := make(chan struct{})
	go func() {
		defer close(markDone)
		e.marker.run(hard, markStop)
	}()
	var wg sync.WaitGroup
	c := newCoordinator(e, hard, &wg)
	err := c.run(ctx)
	wg.Wait()
	close(markStop)
	<-markDone
	c.leave()
	e.log.Info("relay stopped", slog.String("owner", e.cfg.Owner))
	return err
}

func (e *Engine) preflight(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := e.db.PingContext(pctx); err != nil {
		return fmt.Errorf("relay: connect to database: %w", err)
	}
	if err := kafkax.Ping(pctx, e.cfg.Brokers, e.security(), connectTimeout); err != nil {
		return fmt.Errorf("relay: connect to Kafka: %w", err)
	}
	session, err := sqlx.ReadSession(pctx, e.db)
	if err != nil {
		return fmt.Errorf("relay: read the database's isolation level and autocommit: %w", err)
	}
	// Lease, probe and metric statements run alone: without autocommit
	// each would leave its transaction open on a pooled connection, its
	// locks held and its snapshot kept (claims unseen, then lost).
	if !session.Autocommit {
		return errors.New("relay: the database sessions run with autocommit off (autocommit=0 in the DSN, or the server's default): the relay's statements must commit by themselves; turn it on for the relay's connections")
	}
	e.pollInTx = !session.Standalone()
	return nil
}

// security is how the engine's Kafka connections are protected.
func (e *Engine) security() kafkax.Security {
	return kafkax.Security{TLS: e.cfg.TLS, SASL: e.cfg.SASL}
}

// since is the monotonic time since the engine was built.
func (e *Engine) since() time.Duration { return time.Since(e.epoch) }

// saw records that seq of source was read.
func (e *Engine) saw(source string, seq int64) {
	a := e.seen[source]
	for {
		old := a.Load()
		if seq <= old || a.CompareAndSwap(old, seq) {
			return
		}
	}
}
