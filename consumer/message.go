package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
)

// Header names the consumer SDK reads or writes.
const (
	// HeaderTraceParent is the W3C trace context header; its value is put on
	// the handler's context (see TraceParent).
	HeaderTraceParent = "traceparent"
	// HeaderDLQTopic and the headers below are added to a dead letter: the
	// original topic, partition and offset, the last error and the attempts.
	HeaderDLQTopic     = "txmsg-dlq-topic"
	HeaderDLQPartition = "txmsg-dlq-partition"
	HeaderDLQOffset    = "txmsg-dlq-offset"
	HeaderDLQError     = "txmsg-dlq-error"
	HeaderDLQAttempts  = "txmsg-dlq-attempts"
	HeaderDLQGroup     = "txmsg-dlq-group"
	// HeaderDLQOmitted marks a dead letter written without the message's
	// value and headers because the dead-letter topic refused the whole
	// copy as too large; it holds the size of the value in bytes, and the
	// headers above say where the whole message is.
	HeaderDLQOmitted = "txmsg-dlq-omitted"
)

// Message is one Kafka record as a handler sees it. ID is the record's
// txmsg-id header or, without one, "topic/partition/offset": the inbox
// dedupes on it.
type Message struct {
	txmsg.Message
	// Partition and Offset locate the record.
	Partition int
	Offset    int64
	// Attempt counts handler calls for this record, from 1.
	Attempt int
	// Time is the record's timestamp.
	Time time.Time
}

// DedupeKey returns the key the inbox dedupes on for a record of topic,
// partition and offset with the given txmsg-id header value.
func DedupeKey(id, topic string, partition int, offset int64) string {
	if id != "" {
		return id
	}
	return fmt.Sprintf("%s/%d/%d", topic, partition, offset)
}

func fromKafka(k kafka.Message) Message {
	m := Message{Partition: k.Partition, Offset: k.Offset, Time: k.Time}
	m.Topic = k.Topic
	m.Key = k.Key
	m.Value = k.Value
	if len(k.Headers) > 0 {
		m.Headers = make([]txmsg.Header, len(k.Headers))
		for i, h := range k.Headers {
			m.Headers[i] = txmsg.Header{Key: h.Key, Value: h.Value}
			if h.Key == txmsg.HeaderID && m.ID == "" {
				m.ID = string(h.Value)
			}
		}
	}
	m.ID = DedupeKey(m.ID, k.Topic, k.Partition, k.Offset)
	return m
}

type traceKey struct{}

// TraceParent returns the W3C traceparent of the message being handled, or
// "" when the record carried none or a malformed one.
func TraceParent(ctx context.Context) string {
	s, _ := ctx.Value(traceKey{}).(string)
	return s
}

// withTraceParent puts m's traceparent header on ctx when it is well formed.
func withTraceParent(ctx context.Context, m *Message) context.Context {
	v, ok := m.Header(HeaderTraceParent)
	if !ok || !validTraceParent(string(v)) {
		return ctx
	}
	return context.WithValue(ctx, traceKey{}, string(v))
}

// validTraceParent checks the W3C shape version-traceid-parentid-flags: 2,
// 32, 16 and 2 lowercase hex digits, neither id all zeros, version not ff.
func validTraceParent(s string) bool {
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	if len(s) > 55 && (s[:2] == "00" || s[55] != '-') {
		return false
	}
	parts := [4]string{s[0:2], s[3:35], s[36:52], s[53:55]}
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return parts[0] != "ff" && parts[1] != "00000000000000000000000000000000" && parts[2] != "0000000000000000"
}
