package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/backoff"
	"github.com/txmsg/txmsg/internal/sqlx/mysqlx"
)

// process handles a delivery: it waits until a retried message is due,
// makes up to WithMaxAttempts attempts, then moves the message to the next
// retry tier or the dead-letter topic. It reports whether the delivery is
// finished (handled, skipped as duplicate, moved on) and so may be
// committed; false means the partition's work ended (a rebalance or
// shutdown) or Run gave up on the message: it will come again.
func (r *run) process(pt *partition, d delivery) bool {
	m := d.msg
	prior, tier := 0, 0
	if d.retry != nil {
		prior, tier = d.retry.attempts, d.retry.tier
		if delay := time.Until(d.retry.due); delay > 0 && !backoff.Sleep(pt.ctx, delay) {
			return false
		}
	}
	group, topic := r.c.group, m.Topic
	conflicts := 0
	for i := 1; ; i++ {
		m.Attempt = prior + i
		err := r.attempt(pt, m)
		if err == nil {
			return true
		}
		if pt.hctx.Err() != nil {
			return false
		}
		r.metrics.Failed(group, topic)
		log := r.log.With(slog.String("msg_id", m.ID), slog.String("topic", topic),
			slog.Int("partition", m.Partition), slog.Int64("offset", m.Offset), slog.Int("attempt", m.Attempt))
		switch {
		case IsPermanent(err):
			log.Warn("consumer: handler failed for good; dead-lettering", slog.Any("error", err))
			return r.deadLetter(pt, d, m, err)
		case mysqlx.IsConflict(err) || unavailable(err):
			// InnoDB rolled the transaction back over a deadlock or lock
			// wait, which concurrent work causes, or the database could not
			// serve (a failover, an outage): not the message's fault. Run it
			// again without spending an attempt, so it never dead-letters,
			// but not forever.
			conflicts++
			i--
			if conflicts > maxTransientRetries {
				r.fail(fmt.Errorf("%w: message %s (%s/%d at offset %d): %d transaction conflicts or database failures in a row, the last: %w",
					ErrStuck, m.ID, topic, m.Partition, m.Offset, conflicts, err))
				return false
			}
			if mysqlx.IsConflict(err) {
				log.Info("consumer: transaction conflict; retrying", slog.Any("error", err))
			} else {
				log.Warn("consumer: database unavailable; retrying", slog.Any("error", err))
			}
			r.metrics.Retried(group, topic)
			if !backoff.Sleep(pt.ctx, r.c.o.backoff.Delay(conflicts)) {
				return false
			}
		case i < r.c.o.maxAttempts:
			log.Info("consumer: handler failed; retrying", slog.Any("error", err))
			r.metrics.Retried(group, topic)
			if !backoff.Sleep(pt.ctx, r.c.o.backoff.Delay(i)) {
				return false
			}
		case tier < len(r.c.o.retryTiers):
			log.Info("consumer: handler failed; moving to the next retry tier", slog.Int("tier", tier+1), slog.Any("error", err))
			r.metrics.Retried(group, topic)
			return r.toTier(pt, d, m, tier+1, err)
		default:
			log.Warn("consumer: handler failed for good; dead-lettering", slog.Any("error", err))
			return r.deadLetter(pt, d, m, err)
		}
	}
}

// attempt calls the handler once with the partition's handler context and
// counts the outcome.
func (r *run) attempt(pt *partition, m Message) error {
	start := time.Now()
	dup, err := r.invoke(pt.hctx, m)
	r.metrics.HandlerLatency(r.c.group, m.Topic, time.Since(start))
	switch {
	case err != nil:
	case dup:
		r.metrics.Duplicate(r.c.group, m.Topic)
	default:
		r.metrics.Consumed(r.c.group, m.Topic, m.Partition)
	}
	return err
}

// invoke calls the handler once, turning a panic into an error. dup reports
// a TxHandlerFunc message skipped because its inbox row exists.
func (r *run) invoke(hctx context.Context, m Message) (dup bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("consumer: handler panicked: %v", p)
		}
	}()
	ctx := withTraceParent(hctx, &m)
	switch h := r.h.(type) {
	case HandlerFunc:
		return false, h(ctx, m)
	case TxHandlerFunc:
		return r.c.runTx(ctx, r.insert, h, m)
	}
	return false, fmt.Errorf("consumer: unknown handler type %T", r.h)
}

// origin returns where a delivery's message was first consumed: its own
// location, or for a retried message the one its headers carry.
func origin(d delivery) (partition int, offset int64) {
	if d.retry != nil {
		return d.retry.partition, d.retry.offset
	}
	return d.msg.Partition, d.msg.Offset
}

// deadLetter writes m to its dead-letter topic with headers naming its
// origin, error and attempts; it reports whether m is finished.
func (r *run) deadLetter(pt *partition, d delivery, m Message, cause error) bool {
	partition, offset := origin(d)
	errText := cause.Error()
	if len(errText) > 1024 {
		errText = errText[:1024]
	}
	km := outgoing(m, deadLetterTopic(r.c.o.dlqTopic, m.Topic, r.c.group), []kafka.Header{
		{Key: HeaderDLQTopic, Value: []byte(m.Topic)},
		{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(partition))},
		{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(offset, 10))},
		{Key: HeaderDLQError, Value: []byte(errText)},
		{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(m.Attempt))},
		{Key: HeaderDLQGroup, Value: []byte(r.c.group)},
	})
	ok, tooLarge := r.write(pt, m, km)
	if tooLarge != nil {
		// The copy is the message plus the headers above, so a message
		// near its topic's limit may not fit the dead-letter topic: rather
		// than stall the partition, dead-letter it without its value and
		// user headers. The headers still say where the whole message is.
		r.log.Warn("consumer: dead letter too large for "+km.Topic+"; writing it without its value",
			slog.String("msg_id", m.ID), slog.Int("value_bytes", len(m.Value)), slog.Any("error", tooLarge))
		slim := kafka.Message{Topic: km.Topic, Key: m.Key, Headers: []kafka.Header{
			{Key: txmsg.HeaderID, Value: []byte(m.ID)},
			{Key: HeaderDLQOmitted, Value: []byte(strconv.Itoa(len(m.Value)))},
		}}
		for _, h := range km.Headers {
			if strings.HasPrefix(h.Key, "txmsg-dlq-") {
				slim.Headers = append(slim.Headers, h)
			}
		}
		if ok, tooLarge = r.write(pt, m, slim); tooLarge != nil {
			r.fail(fmt.Errorf("%w: message %s (%s/%d at offset %d): %s refuses even its dead letter without the value: %w",
				ErrStuck, m.ID, m.Topic, m.Partition, m.Offset, km.Topic, tooLarge))
		}
	}
	if !ok {
		return false
	}
	r.metrics.DeadLettered(r.c.group, m.Topic)
	return true
}

// outgoing copies m into a record for topic: key, value, user headers
// (without txmsg's retry and dead-letter headers), txmsg-id set to m.ID so
// the inbox and operators still know the message, then extra.
func outgoing(m Message, topic string, extra []kafka.Header) kafka.Message {
	km := kafka.Message{Topic: topic, Key: m.Key, Value: m.Value}
	for _, h := range m.Headers {
		if !reservedHeader(h.Key) {
			km.Headers = append(km.Headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
	}
	km.Headers = append(km.Headers, kafka.Header{Key: txmsg.HeaderID, Value: []byte(m.ID)})
	km.Headers = append(km.Headers, extra...)
	return km
}

// write produces km, retrying with backoff until Kafka takes it; it
// reports whether km was written. It gives up when the partition's work
// ends, and after maxTransientRetries retries, when Run stops with
// ErrStuck: the message is not finished, so its offset is not committed.
// Kafka judges size by the request: a batch the writer made of records
// from several partitions' workers is refused whole when together they
// exceed the topic's limit, so a refused record is sent again alone, and
// only one refused alone is too large: write then returns why, for the
// caller to send something smaller.
func (r *run) write(pt *partition, m Message, km kafka.Message) (ok bool, tooLarge error) {
	w := r.writer
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(pt.hctx, 30*time.Second)
		err := w.WriteMessages(ctx, km)
		cancel()
		if err == nil {
			return true, nil
		}
		if pt.hctx.Err() != nil {
			return false, nil
		}
		if refusedAsTooLarge(err) {
			if w == r.single {
				return false, err
			}
			w = r.single
			attempt--
			continue
		}
		if attempt > maxTransientRetries {
			r.fail(fmt.Errorf("%w: message %s (%s/%d at offset %d): write to %s failed %d times, the last: %w",
				ErrStuck, m.ID, m.Topic, m.Partition, m.Offset, km.Topic, attempt, err))
			return false, nil
		}
		r.log.Warn("consumer: write to "+km.Topic, slog.String("msg_id", m.ID), slog.String("topic", km.Topic),
			slog.Int("attempt", attempt), slog.Any("error", err))
		if !backoff.Sleep(pt.ctx, r.c.o.backoff.Delay(attempt)) {
			return false, nil
		}
	}
}

// refusedAsTooLarge reports whether a write failed because its record is
// too large for the topic (the broker's answer) or for the writer.
func refusedAsTooLarge(err error) bool {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		return slices.ContainsFunc(we, func(e error) bool { return e != nil && refusedAsTooLarge(e) })
	}
	var mt kafka.MessageTooLargeError
	return errors.As(err, &mt) || errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge)
}

// deadLetterTopic is the dead-letter topic of a message of topic: override
// when set, else "<topic>.<group>.dlq".
func deadLetterTopic(override, topic, group string) string {
	if override != "" {
		return override
	}
	return topic + "." + group + ".dlq"
}
