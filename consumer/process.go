package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
)

// process handles m with retries and, after the last attempt, the dead
// letter. It reports whether m is finished (handled, skipped as duplicate,
// or dead-lettered) and so may be committed; false means shutdown
// interrupted it and it will be delivered again.
func (r *run) process(m Message) bool {
	group, topic := r.c.group, m.Topic
	for attempt := 1; ; attempt++ {
		m.Attempt = attempt
		start := time.Now()
		dup, err := r.invoke(m)
		r.metrics.HandlerLatency(group, topic, time.Since(start))
		if err == nil {
			if dup {
				r.metrics.Duplicate(group, topic)
			} else {
				r.metrics.Consumed(group, topic, m.Partition)
			}
			return true
		}
		if r.hctx.Err() != nil {
			return false
		}
		r.metrics.Failed(group, topic)
		log := r.log.With(slog.String("msg_id", m.ID), slog.String("topic", topic),
			slog.Int("partition", m.Partition), slog.Int64("offset", m.Offset), slog.Int("attempt", attempt))
		if IsPermanent(err) || attempt >= r.c.o.maxAttempts {
			log.Warn("consumer: handler failed for good; dead-lettering", slog.Any("error", err))
			return r.deadLetter(m, err)
		}
		log.Info("consumer: handler failed; retrying", slog.Any("error", err))
		r.metrics.Retried(group, topic)
		if !r.wait(r.c.o.backoff.Delay(attempt)) {
			return false
		}
	}
}

// wait sleeps d unless shutdown starts first; it reports whether d passed.
func (r *run) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.stop:
		return false
	}
}

// invoke calls the handler once, turning a panic into an error. dup reports
// a TxHandlerFunc message skipped because its inbox row exists.
func (r *run) invoke(m Message) (dup bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("consumer: handler panicked: %v", p)
		}
	}()
	ctx := withTraceParent(r.hctx, &m)
	switch h := r.h.(type) {
	case HandlerFunc:
		return false, h(ctx, m)
	case TxHandlerFunc:
		return r.c.runTx(ctx, r.insert, h, m)
	}
	return false, fmt.Errorf("consumer: unknown handler type %T", r.h)
}

// deadLetter writes m to its dead-letter topic, retrying until Kafka takes
// it or shutdown starts; it reports whether m is finished.
func (r *run) deadLetter(m Message, cause error) bool {
	topic := deadLetterTopic(r.c.o.dlqTopic, m.Topic, r.c.group)
	km := kafka.Message{Topic: topic, Key: m.Key, Value: m.Value}
	for _, h := range m.Headers {
		km.Headers = append(km.Headers, kafka.Header{Key: h.Key, Value: h.Value})
	}
	errText := cause.Error()
	if len(errText) > 1024 {
		errText = errText[:1024]
	}
	km.Headers = append(km.Headers,
		kafka.Header{Key: HeaderDLQTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(m.Partition))},
		kafka.Header{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
		kafka.Header{Key: HeaderDLQError, Value: []byte(errText)},
		kafka.Header{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(m.Attempt))},
		kafka.Header{Key: HeaderDLQGroup, Value: []byte(r.c.group)},
	)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(r.hctx, 30*time.Second)
		err := r.dlq.WriteMessages(ctx, km)
		cancel()
		if err == nil {
			r.metrics.DeadLettered(r.c.group, m.Topic)
			return true
		}
		if r.hctx.Err() != nil {
			return false
		}
		r.log.Warn("consumer: write dead letter", slog.String("msg_id", m.ID), slog.String("topic", topic),
			slog.Int("attempt", attempt), slog.Any("error", err))
		if !r.wait(r.c.o.backoff.Delay(attempt)) {
			return false
		}
	}
}

// deadLetterTopic is the dead-letter topic of a message of topic: override
// when set, else "<topic>.<group>.dlq".
func deadLetterTopic(override, topic, group string) string {
	if override != "" {
		return override
	}
	return topic + "." + group + ".dlq"
}

// errDuplicate rolls back a transaction whose inbox row exists already.
var errDuplicate = errors.New("consumer: duplicate message")
