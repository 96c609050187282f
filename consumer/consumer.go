package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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
	// ErrStuck: Run stopped because a message could not be finished within
	// its bounded in-place retries (transaction conflicts, or writes to the
	// dead-letter or retry topics). Its offset was not committed: the
	// message comes again when the group runs again.
	ErrStuck = errors.New("consumer: message stuck")
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
	// rateChanged is closed, and replaced, by each SetRateLimit: a wait
	// reserved under the old limit starts over under the new one.
	rateMu      sync.Mutex
	rateChanged chan struct{}
	running     atomic.Bool
	insertSQL   string
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
	if err := checkTopics(topics, group, o); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	balancers, err := o.groupBalancers()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c := &Consumer{
		brokers:     append([]string(nil), brokers...),
		group:       group,
		topics:      append([]string(nil), topics...),
		o:           o,
		balancers:   balancers,
		limiter:     rate.NewLimiter(rate.Inf, 0),
		rateChanged: make(chan struct{}),
		insertSQL:   insertInbox,
	}
	if o.ratePerSecond > 0 {
		c.SetRateLimit(o.ratePerSecond, o.rateBurst)
	}
	return c, nil
}

// checkTopics validates the topics and the dead-letter and retry topics
// derived from them.
func checkTopics(topics []string, group string, o options) error {
	for _, t := range topics {
		if err := txmsg.ValidateTopic(t); err != nil {
			return fmt.Errorf("topic: %w", err)
		}
		if err := txmsg.ValidateTopic(deadLetterTopic(o.dlqTopic, t, group)); err != nil {
			return fmt.Errorf("dead-letter topic of %s (set WithDeadLetterTopic): %w", t, err)
		}
		for i := range o.retryTiers {
			if err := txmsg.ValidateTopic(retryTopicName(t, group, i+1)); err != nil {
				return fmt.Errorf("retry topic of %s: %w", t, err)
			}
		}
	}
	return nil
}

// groupBalancers returns the balancers the options select.
func (o options) groupBalancers() ([]kafka.GroupBalancer, error) {
	switch {
	case o.strategy != "":
		cfg := o.balancerConfig
		if cfg.Member == "" {
			cfg.Member = defaultMemberName()
		}
		b, err := BalancerByName(o.strategy, cfg)
		if err != nil {
			return nil, err
		}
		return []kafka.GroupBalancer{b}, nil
	case len(o.balancers) > 0:
		return o.balancers, nil
	default:
		return []kafka.GroupBalancer{inOrder{kafka.RangeGroupBalancer{}}}, nil
	}
}

// Group returns the consumer group's name.
func (c *Consumer) Group() string { return c.group }

// SetRateLimit changes the rate limit at once, also while Run runs:
// perSecond messages per second with a bucket of burst (at least 1);
// perSecond <= 0 removes the limit.
func (c *Consumer) SetRateLimit(perSecond float64, burst int) {
	defer func() {
		c.rateMu.Lock()
		defer c.rateMu.Unlock()
		close(c.rateChanged)
		c.rateChanged = make(chan struct{})
	}()
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

// waitRate waits until the rate limit lets one more message go, or ctx
// ends. A wait reserved under a limit that SetRateLimit then changes starts
// over under the new one (the limiter's own Wait keeps the old delay).
func (c *Consumer) waitRate(ctx context.Context) error {
	for {
		// Without a limit (the usual case) no lock is taken per message.
		if c.limiter.Limit() == rate.Inf {
			return nil
		}
		c.rateMu.Lock()
		changed := c.rateChanged
		c.rateMu.Unlock()
		r := c.limiter.Reserve()
		d := r.Delay()
		if r.OK() && d == 0 {
			return nil
		}
		// A reservation past the burst never comes: wait for a change.
		t := time.NewTimer(d)
		if !r.OK() {
			t.Stop()
		}
		select {
		case <-t.C:
			return nil
		case <-changed:
			t.Stop()
			r.Cancel()
		case <-ctx.Done():
			t.Stop()
			r.Cancel()
			return ctx.Err()
		}
	}
}

// Run creates the dead-letter topics (and the retry topics) that do not
// exist yet, joins the group and handles messages until ctx is done, then
// shuts down gracefully: it stops fetching, lets handlers already running
// finish (after the drain timeout their context is canceled; Run still
// waits for them to return), drops messages not yet started, commits the
// offsets of finished work and nothing beyond, and leaves the group.
//
// It returns nil after a shutdown by ctx; an error for a bad handler or a
// failed setup (such as a dead-letter topic it may not create); or, after
// the same graceful shutdown, an error wrapping ErrStuck when a message
// exhausted its bounded in-place retries. Run returns only after every
// goroutine it started has returned; a Consumer runs once at a time, and
// may Run again after Run returned.
func (c *Consumer) Run(ctx context.Context, h Handler) (err error) {
	if err := c.checkHandler(h); err != nil {
		return err
	}
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)
	r, err := c.newRun(ctx, h)
	if err != nil {
		if ctx.Err() != nil {
			return nil // shut down during setup
		}
		return err
	}
	defer func() { err = errors.Join(err, r.close()) }()
	return r.serve()
}

// checkHandler rejects a handler Run cannot call.
func (c *Consumer) checkHandler(h Handler) error {
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
	return nil
}
