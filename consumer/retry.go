package consumer

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
)

// Headers of a record in a retry topic.
const (
	// HeaderRetryTopic is the topic the message was first consumed from.
	HeaderRetryTopic = "txmsg-retry-topic"
	// HeaderRetryPartition and HeaderRetryOffset locate it there.
	HeaderRetryPartition = "txmsg-retry-partition"
	HeaderRetryOffset    = "txmsg-retry-offset"
	// HeaderRetryAttempts counts the handler attempts made so far.
	HeaderRetryAttempts = "txmsg-retry-attempts"
	// HeaderRetryDue is when the next attempt is due, in Unix milliseconds.
	HeaderRetryDue = "txmsg-retry-due"
)

// retryGroupSuffix names the consumer group that reads the retry topics.
const retryGroupSuffix = ".retry"

// retryTopic is a retry topic's origin topic and tier (from 1).
type retryTopic struct {
	origin string
	tier   int
}

// retryInfo is what a retried record's headers say.
type retryInfo struct {
	tier      int
	attempts  int
	due       time.Time
	partition int
	offset    int64
}

// retryTopicName is the topic of tier (from 1) for messages of topic.
func retryTopicName(topic, group string, tier int) string {
	return topic + "." + group + ".retry-" + strconv.Itoa(tier)
}

// retryTopics maps every retry topic of c to its origin and tier.
func (c *Consumer) retryTopics() map[string]retryTopic {
	if len(c.o.retryTiers) == 0 {
		return nil
	}
	out := map[string]retryTopic{}
	for _, t := range c.topics {
		for i := range c.o.retryTiers {
			out[retryTopicName(t, c.group, i+1)] = retryTopic{origin: t, tier: i + 1}
		}
	}
	return out
}

func reservedHeader(k string) bool {
	return k == txmsg.HeaderID || strings.HasPrefix(k, "txmsg-retry-") || strings.HasPrefix(k, "txmsg-dlq-")
}

// parseRetry restores a retried message as the handler first saw it (its
// origin topic, its id) and reads its retry headers; bad headers count as
// a first retry due now.
func parseRetry(rt retryTopic, m *Message) *retryInfo {
	info := &retryInfo{tier: rt.tier, partition: m.Partition, offset: m.Offset}
	m.Topic = rt.origin
	if v, ok := m.Header(HeaderRetryTopic); ok && len(v) > 0 {
		m.Topic = string(v)
	}
	if v, ok := m.Header(HeaderRetryAttempts); ok {
		info.attempts, _ = strconv.Atoi(string(v))
	}
	if v, ok := m.Header(HeaderRetryDue); ok {
		if ms, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			info.due = time.UnixMilli(ms)
		}
	}
	if v, ok := m.Header(HeaderRetryPartition); ok {
		if p, err := strconv.Atoi(string(v)); err == nil {
			info.partition = p
		}
	}
	if v, ok := m.Header(HeaderRetryOffset); ok {
		if o, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			info.offset = o
		}
	}
	return info
}

// toTier writes m to retry tier (from 1), due after the tier's delay, and
// reports whether it was written (and so m is finished here). The record
// keeps m's id, so the inbox still dedupes it. A copy too large for the
// tier's topic dead-letters m instead, with cause.
func (r *run) toTier(pt *partition, d delivery, m Message, tier int, cause error) bool {
	partition, offset := origin(d)
	due := time.Now().Add(r.c.o.retryTiers[tier-1])
	km := outgoing(m, retryTopicName(m.Topic, r.c.group, tier), []kafka.Header{
		{Key: HeaderRetryTopic, Value: []byte(m.Topic)},
		{Key: HeaderRetryPartition, Value: []byte(strconv.Itoa(partition))},
		{Key: HeaderRetryOffset, Value: []byte(strconv.FormatInt(offset, 10))},
		{Key: HeaderRetryAttempts, Value: []byte(strconv.Itoa(m.Attempt))},
		{Key: HeaderRetryDue, Value: []byte(strconv.FormatInt(due.UnixMilli(), 10))},
	})
	ok, tooLarge := r.write(pt, m, km)
	if tooLarge != nil {
		r.log.Warn("consumer: retry copy too large for "+km.Topic+"; dead-lettering", slog.String("msg_id", m.ID),
			slog.Any("error", tooLarge))
		return r.deadLetter(pt, d, m, fmt.Errorf("%w (retry tier %s refused the copy: %v)", cause, km.Topic, tooLarge))
	}
	return ok
}
