package consumer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/segmentio/kafka-go"
	"golang.org/x/time/rate"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/sqlx"
)

// Errors Run and New return; compare with errors.Is.
var (
	// ErrInvalidConfig: New or Run was given an unusable argument or option.
	ErrInvalidConfig = errors.New("consumer: invalid configuration")
	// ErrRunning: Run was called while another Run of the same Consumer runs.
	ErrRunning = errors.New("consumer: already running")
)

// Consumer reads a consumer group's topics and hands each message to a
// Handler, committing offsets only behind finished work. Create it with New;
// its methods are safe for concurrent use.
type Consumer struct {
	brokers   []string
	group     string
	topics    []string
	o         options
	balancers []kafka.GroupBalancer
	limiter   *rate.Limiter
	running   atomic.Bool
	insertSQL string
	purgeSQL  string
	// skipCommits makes commit a no-op; tests set it to simulate a process
	// killed after its handlers' transactions but before any offset commit.
	skipCommits bool
}

// New validates its arguments and options together and returns a Consumer
// for group reading topics from brokers. It does not connect: Run does.
func New(brokers []string, group string, topics []string, opts ...Option) (*Consumer, error) {
	if err := kafkax.CheckBrokers(brokers); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if group == "" {
		return nil, fmt.Errorf("%w: empty group", ErrInvalidConfig)
	}
	if len(group) > 255 {
		return nil, fmt.Errorf("%w: group is %d bytes, more than 255", ErrInvalidConfig, len(group))
	}
	if len(topics) == 0 {
		return nil, fmt.Errorf("%w: no topics", ErrInvalidConfig)
	}
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidConfig)
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	for _, t := range topics {
		if err := txmsg.ValidateTopic(t); err != nil {
			return nil, fmt.Errorf("%w: topic: %w", ErrInvalidConfig, err)
		}
		if err := txmsg.ValidateTopic(deadLetterTopic(o.dlqTopic, t, group)); err != nil {
			return nil, fmt.Errorf("%w: dead-letter topic of %s (set WithDeadLetterTopic): %w", ErrInvalidConfig, t, err)
		}
	}
	if o.retention > 0 {
		if _, err := cron.ParseStandard(o.purgeSchedule); err != nil {
			return nil, fmt.Errorf("%w: inbox purge schedule %q: %w", ErrInvalidConfig, o.purgeSchedule, err)
		}
	}
	if !sqlx.ValidIdent(o.inboxTable) {
		return nil, fmt.Errorf("%w: inbox table %q is not a valid identifier", ErrInvalidConfig, o.inboxTable)
	}
	c := &Consumer{
		brokers:   append([]string(nil), brokers...),
		group:     group,
		topics:    append([]string(nil), topics...),
		o:         o,
		limiter:   rate.NewLimiter(rate.Inf, 0),
		insertSQL: fmt.Sprintf(insertInbox, o.inboxTable),
		purgeSQL:  fmt.Sprintf(purgeInbox, o.inboxTable),
	}
	if o.ratePerSecond > 0 {
		c.SetRateLimit(o.ratePerSecond, o.rateBurst)
	}
	switch {
	case o.strategy != "":
		cfg := o.balancerConfig
		if cfg.Member == "" {
			cfg.Member = defaultMemberName()
		}
		b, err := BalancerByName(o.strategy, cfg)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		c.balancers = []kafka.GroupBalancer{b}
	case len(o.balancers) > 0:
		c.balancers = o.balancers
	default:
		c.balancers = []kafka.GroupBalancer{AverageBalancer{Member: defaultMemberName()}}
	}
	return c, nil
}

// Group returns the consumer group's name.
func (c *Consumer) Group() string { return c.group }

// SetRateLimit changes the rate limit at once, also while Run runs:
// perSecond messages per second with a bucket of burst (at least 1);
// perSecond <= 0 removes the limit.
func (c *Consumer) SetRateLimit(perSecond float64, burst int) {
	if perSecond <= 0 {
		c.limiter.SetLimit(rate.Inf)
		return
	}
	if burst < 1 {
		burst = 1
	}
	c.limiter.SetBurst(burst)
	c.limiter.SetLimit(rate.Limit(perSecond))
}

// run is the state of one Run call.
type run struct {
	c       *Consumer
	h       Handler
	reader  *kafka.Reader
	dlq     *kafka.Writer
	insert  *sql.Stmt // the inbox insert, for a TxHandlerFunc
	track   *tracker
	stop    <-chan struct{} // Run's ctx.Done(): shutdown has begun
	hctx    context.Context
	lanes   map[laneKey]*lane
	laneWG  sync.WaitGroup
	log     *slog.Logger
	metrics Metrics
}

type laneKey struct {
	tp  tpKey
	idx int
}

// lane is one worker of a partition: it handles its messages in order.
type lane struct {
	ch chan work
}

type work struct {
	msg Message
	e   *entry
}

// Run joins the group and handles messages until ctx is done, then shuts
// down gracefully: it stops fetching, lets handlers already running finish
// (after the drain timeout their context is canceled; Run still waits for
// them to return), drops messages not yet started, commits the offsets of
// finished work and nothing beyond, and leaves the group. It returns nil
// after a shutdown by ctx, or an error for a bad handler. Run returns only
// after every goroutine it started has returned; a Consumer runs once at a
// time, and may Run again after Run returned.
func (c *Consumer) Run(ctx context.Context, h Handler) error {
	switch h := h.(type) {
	case nil:
		return fmt.Errorf("%w: nil handler", ErrInvalidConfig)
	case HandlerFunc:
		if h == nil {
			return fmt.Errorf("%w: nil HandlerFunc", ErrInvalidConfig)
		}
	case TxHandlerFunc:
		if h == nil {
			return fmt.Errorf("%w: nil TxHandlerFunc", ErrInvalidConfig)
		}
		if c.o.db == nil {
			return fmt.Errorf("%w: TxHandlerFunc needs WithInbox", ErrInvalidConfig)
		}
	default:
		return fmt.Errorf("%w: unknown handler type %T", ErrInvalidConfig, h)
	}
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	reader, err := kafkax.NewGroupReader(c.brokers, kafkax.ReaderConfig{
		Group:             c.group,
		Topics:            c.topics,
		Balancers:         c.balancers,
		SessionTimeout:    c.o.session,
		HeartbeatInterval: c.o.heartbeat,
		RebalanceTimeout:  c.o.rebalance,
		JoinGroupBackoff:  c.o.joinBackoff,
		Logger:            c.o.logger,
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	dlq, err := kafkax.NewWriter(c.brokers, kafkax.WriterConfig{Logger: c.o.logger})
	if err != nil {
		return errors.Join(fmt.Errorf("%w: %w", ErrInvalidConfig, err), reader.Close())
	}
	var insert *sql.Stmt
	if _, ok := h.(TxHandlerFunc); ok {
		if insert, err = c.o.db.PrepareContext(ctx, c.insertSQL); err != nil {
			return errors.Join(fmt.Errorf("consumer: prepare inbox insert: %w", err), reader.Close(), dlq.Close())
		}
		defer insert.Close()
	}
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	r := &run{
		c: c, h: h, reader: reader, dlq: dlq, insert: insert, track: newTracker(),
		stop: ctx.Done(), hctx: hctx, lanes: map[laneKey]*lane{},
		log:     c.o.logger.With(slog.String("group", c.group)),
		metrics: c.o.metrics,
	}

	commitCtx, stopCommits := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		r.commitLoop(commitCtx)
	}()
	stopPurge, err := r.startPurge()
	if err != nil {
		stopCommits()
		bg.Wait()
		return errors.Join(err, reader.Close(), dlq.Close())
	}

	r.fetchLoop(ctx)

	// Shutdown: no new handler starts, running ones get the drain timeout.
	for _, l := range r.lanes {
		close(l.ch)
	}
	drained := make(chan struct{})
	go func() {
		r.laneWG.Wait()
		close(drained)
	}()
	timer := time.NewTimer(c.o.drainTimeout)
	select {
	case <-drained:
		timer.Stop()
	case <-timer.C:
		r.log.Warn("consumer: drain timeout passed; canceling running handlers", slog.Duration("timeout", c.o.drainTimeout))
		cancelHandlers()
		<-drained
	}
	stopPurge()
	stopCommits()
	bg.Wait()
	finalCtx, cancelFinal := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancelFinal()
	var errs []error
	if err := r.commit(finalCtx); err != nil {
		errs = append(errs, err)
	}
	if err := reader.Close(); err != nil {
		errs = append(errs, fmt.Errorf("consumer: close reader (leave group): %w", err))
	}
	if err := dlq.Close(); err != nil {
		errs = append(errs, fmt.Errorf("consumer: close dead-letter writer: %w", err))
	}
	return errors.Join(errs...)
}

// fetchLoop fetches and dispatches messages until ctx is done.
func (r *run) fetchLoop(ctx context.Context) {
	var failures int
	for {
		km, err := r.reader.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			r.log.Warn("consumer: fetch", slog.Any("error", err), slog.Int("attempt", failures))
			if !r.sleep(ctx, r.c.o.backoff.Delay(failures)) {
				return
			}
			continue
		}
		failures = 0
		if lag := km.HighWaterMark - km.Offset - 1; km.HighWaterMark > 0 && lag >= 0 {
			r.metrics.Lag(r.c.group, km.Topic, km.Partition, lag)
		}
		if err := r.c.limiter.Wait(ctx); err != nil {
			return
		}
		m := fromKafka(km)
		tp := tpKey{km.Topic, km.Partition}
		l := r.lane(laneKey{tp: tp, idx: r.laneIndex(&m)})
		e := r.track.add(tp, km.Offset)
		select {
		case l.ch <- work{msg: m, e: e}:
		case <-ctx.Done():
			return
		}
	}
}

// laneIndex sends every message of a key to the same lane of its
// partition; keyless messages spread by offset.
func (r *run) laneIndex(m *Message) int {
	n := r.c.o.concurrency
	if n == 1 {
		return 0
	}
	if m.Key == nil {
		return int(m.Offset % int64(n))
	}
	h := fnv.New32a()
	h.Write(m.Key)
	return int(h.Sum32() % uint32(n))
}

// lane returns the lane for k, starting its worker on first use.
func (r *run) lane(k laneKey) *lane {
	if l := r.lanes[k]; l != nil {
		return l
	}
	l := &lane{ch: make(chan work, r.c.o.laneBuffer)}
	r.lanes[k] = l
	r.laneWG.Add(1)
	go func() {
		defer r.laneWG.Done()
		for w := range l.ch {
			if r.stopping() {
				continue
			}
			if r.process(w.msg) {
				r.track.finish(w.e)
			}
		}
	}()
	return l
}

func (r *run) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// sleep waits d or until ctx is done; it reports whether d passed.
func (r *run) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// commitLoop commits low watermarks every commit interval until ctx is done.
func (r *run) commitLoop(ctx context.Context) {
	t := time.NewTicker(r.c.o.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.commit(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("consumer: commit offsets", slog.Any("error", err))
			}
		}
	}
}

// commit commits every partition's low watermark that moved.
func (r *run) commit(ctx context.Context) error {
	msgs := r.track.pending()
	if len(msgs) == 0 || r.c.skipCommits {
		return nil
	}
	if err := r.reader.CommitMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("consumer: commit %d partitions: %w", len(msgs), err)
	}
	r.track.committed(msgs)
	return nil
}
