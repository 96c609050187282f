package consumer

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/kafkax"
)

// maxTransientRetries bounds every retry loop that spends no attempt of
// WithMaxAttempts: transaction conflicts, writes to the dead-letter and
// retry topics, and the creation of those topics at start. With the
// default backoff (100ms doubling to 10s) 30 retries last about four
// minutes: longer than any deadlock storm or broker failover, short enough
// that a broken setup surfaces as Run's error instead of a silent stall.
const maxTransientRetries = 30

// run is the state of one Run call.
type run struct {
	c         *Consumer
	h         Handler
	writer    *kafka.Writer         // dead letters and retry tiers
	single    *kafka.Writer         // the same, one record per request (see write)
	transport *kafka.Transport      // the writer's and admin requests (nil: plaintext)
	insert    *sql.Stmt             // the inbox insert, for a TxHandlerFunc
	pipes     []*pipeline           // one per consumer group
	retry     map[string]retryTopic // retry topic name → its origin and tier
	log       *slog.Logger
	metrics   hooks
	// ctx is done once shutdown begins: Run's ctx ended, or fail was called.
	ctx  context.Context
	stop context.CancelCauseFunc
	// hctx is the root of the handlers' contexts. It outlives ctx: each
	// partition cancels its handlers only after the drain timeout.
	hctx    context.Context
	closers []func() error // run in reverse order by close

	mu      sync.Mutex
	failure error // the first error that stopped Run, returned by it
}

// newRun prepares a Run: the writer for dead letters and retry tiers, the
// inbox statement, the dead-letter and retry topics, and the groups, which
// start joining at once. On error it releases what it set up.
func (c *Consumer) newRun(ctx context.Context, h Handler) (_ *run, err error) {
	rctx, stop := context.WithCancelCause(ctx)
	r := &run{
		c: c, h: h, ctx: rctx, stop: stop, hctx: context.WithoutCancel(ctx), retry: c.retryTopics(),
		log:     c.o.logger.With(slog.String("group", c.group)),
		metrics: c.o.metrics,
		closers: []func() error{func() error { stop(nil); return nil }},
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, r.close())
		}
	}()
	// One transport carries the writer's and the admin requests with the
	// TLS and SASL options (nil: kafka-go's default, plaintext).
	r.transport = kafkax.NewTransport(c.o.security)
	if r.transport != nil {
		r.closers = append(r.closers, func() error { r.transport.CloseIdleConnections(); return nil })
	}
	if r.writer, err = kafkax.NewWriter(c.brokers, kafkax.WriterConfig{Logger: c.o.logger, Transport: r.transport}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	r.closers = append(r.closers, func() error {
		if err := r.writer.Close(); err != nil {
			return fmt.Errorf("consumer: close dead-letter and retry writer: %w", err)
		}
		return nil
	})
	if r.single, err = kafkax.NewWriter(c.brokers, kafkax.WriterConfig{Logger: c.o.logger, Transport: r.transport, BatchSize: 1}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	r.closers = append(r.closers, func() error {
		if err := r.single.Close(); err != nil {
			return fmt.Errorf("consumer: close single-record writer: %w", err)
		}
		return nil
	})
	if _, ok := h.(TxHandlerFunc); ok {
		if r.insert, err = c.o.db.PrepareContext(ctx, c.insertSQL); err != nil {
			return nil, fmt.Errorf("consumer: prepare inbox insert: %w", err)
		}
		r.closers = append(r.closers, r.insert.Close)
	}
	if err := c.waitTopics(ctx, r.log, r.transport); err != nil {
		return nil, err
	}
	if err := c.ensureTopics(ctx, r.log, r.transport); err != nil {
		return nil, err
	}
	if err := r.joinGroups(); err != nil {
		return nil, err
	}
	return r, nil
}

// joinGroups creates a pipeline per consumer group: the group's own topics
// and, with retry tiers, "<group>.retry" for the retry topics.
func (r *run) joinGroups() error {
	groups := map[string][]string{r.c.group: r.c.topics}
	for name := range r.retry {
		groups[r.c.group+retryGroupSuffix] = append(groups[r.c.group+retryGroupSuffix], name)
	}
	for group, topics := range groups {
		cg, err := kafkax.NewConsumerGroup(r.c.brokers, kafkax.ReaderConfig{
			Group:             group,
			Topics:            topics,
			Balancers:         r.c.balancers,
			SessionTimeout:    r.c.o.session,
			HeartbeatInterval: r.c.o.heartbeat,
			RebalanceTimeout:  r.c.o.rebalance,
			JoinGroupBackoff:  r.c.o.joinBackoff,
			Logger:            r.c.o.logger,
			Security:          r.c.o.security,
		})
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		p := &pipeline{name: group, group: cg}
		r.pipes = append(r.pipes, p)
		r.closers = append(r.closers, func() error {
			err := cg.Close()
			p.holds.Wait()
			if err != nil {
				return fmt.Errorf("consumer: leave group %s: %w", group, err)
			}
			return nil
		})
	}
	return nil
}

// serve runs the groups and the inbox purge until shutdown and returns
// why Run stopped, if not by its ctx, joined with the errors of the final
// commits.
func (r *run) serve() error {
	var wg sync.WaitGroup
	if r.c.o.db != nil && r.c.o.retention > 0 {
		wg.Go(r.purgeLoop)
	}
	errs := make([]error, len(r.pipes))
	for i, p := range r.pipes {
		wg.Go(func() { errs[i] = r.consume(p) })
	}
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.failure, errors.Join(errs...))
}

// fail records err as the reason Run stops, unless one was recorded
// already, and begins the graceful shutdown.
func (r *run) fail(err error) {
	r.mu.Lock()
	if r.failure == nil {
		r.failure = err
	}
	r.mu.Unlock()
	r.stop(err)
}

// close releases what newRun set up, last first: it leaves the groups, then
// closes the writer and the inbox statement.
func (r *run) close() error {
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		errs = append(errs, r.closers[i]())
	}
	return errors.Join(errs...)
}
