package consumer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/segmentio/kafka-go"
	"golang.org/x/time/rate"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/kafkax"
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
		for i := range o.retryTiers {
			if err := txmsg.ValidateTopic(retryTopicName(t, group, i+1)); err != nil {
				return nil, fmt.Errorf("%w: retry topic of %s: %w", ErrInvalidConfig, t, err)
			}
		}
	}
	if o.retention > 0 {
		if _, err := cron.ParseStandard(o.purgeSchedule); err != nil {
			return nil, fmt.Errorf("%w: inbox purge schedule %q: %w", ErrInvalidConfig, o.purgeSchedule, err)
		}
	}
	c := &Consumer{
		brokers:   append([]string(nil), brokers...),
		group:     group,
		topics:    append([]string(nil), topics...),
		o:         o,
		limiter:   rate.NewLimiter(rate.Inf, 0),
		insertSQL: insertInbox,
		purgeSQL:  purgeInbox,
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
	writer  *kafka.Writer // dead letters and retry tiers
	insert  *sql.Stmt     // the inbox insert, for a TxHandlerFunc
	pipes   []*pipeline
	retry   map[string]retryTopic // retry topic name → its origin and tier
	stop    <-chan struct{}       // Run's ctx.Done(): shutdown has begun
	hctx    context.Context
	log     *slog.Logger
	metrics hooks
}

// Run joins the group and handles messages until ctx is done, then shuts
// down gracefully: it stops fetching, lets handlers already running finish
// (after the drain timeout their context is canceled; Run still waits for
// them to return), drops messages not yet started, commits the offsets of
// finished work and nothing beyond, and leaves the group. It returns nil
// after a shutdown by ctx, or an error for a bad handler or a failed setup.
// Run returns only after every goroutine it started has returned; a
// Consumer runs once at a time, and may Run again after Run returned.
func (c *Consumer) Run(ctx context.Context, h Handler) (err error) {
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

	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	r := &run{
		c: c, h: h, stop: ctx.Done(), hctx: hctx, retry: c.retryTopics(),
		log:     c.o.logger.With(slog.String("group", c.group)),
		metrics: c.o.metrics,
	}
	// closers run in reverse order when Run returns.
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i]())
		}
	}()
	r.writer, err = kafkax.NewWriter(c.brokers, kafkax.WriterConfig{Logger: c.o.logger})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	closers = append(closers, func() error {
		if err := r.writer.Close(); err != nil {
			return fmt.Errorf("consumer: close dead-letter and retry writer: %w", err)
		}
		return nil
	})
	if _, ok := h.(TxHandlerFunc); ok {
		if r.insert, err = c.o.db.PrepareContext(ctx, c.insertSQL); err != nil {
			return fmt.Errorf("consumer: prepare inbox insert: %w", err)
		}
		closers = append(closers, r.insert.Close)
	}
	groups := map[string][]string{c.group: c.topics}
	if len(r.retry) > 0 {
		if err := c.createRetryTopics(ctx, r.retry); err != nil {
			return err
		}
		for name := range r.retry {
			groups[c.group+retryGroupSuffix] = append(groups[c.group+retryGroupSuffix], name)
		}
	}
	for group, topics := range groups {
		reader, err := kafkax.NewGroupReader(c.brokers, kafkax.ReaderConfig{
			Group:             group,
			Topics:            topics,
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
		r.pipes = append(r.pipes, &pipeline{reader: reader, track: newTracker(), lanes: map[laneKey]*lane{}})
		closers = append(closers, func() error {
			if err := reader.Close(); err != nil {
				return fmt.Errorf("consumer: close reader of group %s (leave group): %w", group, err)
			}
			return nil
		})
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
		return err
	}

	var fetchers sync.WaitGroup
	for _, p := range r.pipes {
		fetchers.Add(1)
		go func() {
			defer fetchers.Done()
			r.fetchLoop(ctx, p)
		}()
	}
	fetchers.Wait()

	// Shutdown: no new handler starts, running ones get the drain timeout.
	drained := make(chan struct{})
	go func() {
		for _, p := range r.pipes {
			p.closeLanes()
		}
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
	return r.commit(finalCtx)
}
