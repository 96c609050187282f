package txmsg

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Kafka header names written on every record the relay publishes.
const (
	// HeaderID carries the message's unique id: the consumer SDK dedupes on it.
	HeaderID = "txmsg-id"
	// HeaderSource says which table the record came from: SourceOutbox or SourceHalf.
	HeaderSource = "txmsg-source"
)

// Values of HeaderSource.
const (
	SourceOutbox = "outbox"
	SourceHalf   = "half"
)

// Limits that apply to every message.
const (
	// MaxTopicLen is Kafka's limit on a topic name.
	MaxTopicLen = 249
	// MaxIDLen is the longest message id the tables store.
	MaxIDLen = 64
	// MaxKeyLen is the longest key the tables store.
	MaxKeyLen = 767
	// DefaultMaxValueBytes is the default limit on a message's size as the
	// Kafka record it becomes (see RecordBytes): 1 MiB less 2 KiB, so that
	// the record, and a consumer's dead-letter copy of it with its headers,
	// fit Kafka's default max.message.bytes (1 MiB and 12 bytes).
	DefaultMaxValueBytes = 1<<20 - 2<<10
	// MaxHeadersBytes is the most bytes a message's headers may take as the
	// tables store them (JSON, values in base64): the size of their headers
	// column, a BLOB.
	MaxHeadersBytes = 65535
)

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Message is what a service publishes: Topic, optional Key (messages of one key
// keep their order), Value and Headers. ID is the message's unique id; left
// empty, the SDK fills in a time-ordered UUIDv7.
type Message struct {
	ID      string
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header
}

// Header returns the value of the first header named key, and whether there was one.
func (m *Message) Header(key string) ([]byte, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

// recordOverhead bounds what a record takes besides its key, value, id and
// headers: the record batch's header (61 bytes), the record's lengths,
// timestamp and offset deltas, and txmsg-source's value.
const recordOverhead = 128

// RecordBytes is at least what a message with key, value, id and headers
// takes as a Kafka record batch of its own, txmsg's headers included: what
// a topic's max.message.bytes bounds. An empty id counts as the 36 bytes of
// the UUID the relay gives it.
func RecordBytes(key, value []byte, id string, headers []Header) int {
	n := recordOverhead + len(key) + len(value) + len(HeaderID) + max(len(id), 36) + len(HeaderSource)
	for _, h := range headers {
		n += len(h.Key) + len(h.Value) + 8 // lengths as varints
	}
	return n
}

// Validate checks m against Kafka's and txmsg's rules: a valid topic name, an
// id and key within the stored lengths, a value, and headers with names of
// UTF-8, that fit MaxHeadersBytes once encoded, and none that txmsg
// reserves; and, all together as a Kafka record (RecordBytes), at most
// maxValue bytes: a message Kafka would refuse is refused here, not
// dead-lettered later. The error wraps ErrInvalidMessage.
func (m *Message) Validate(maxValue int) error {
	if err := ValidateTopic(m.Topic); err != nil {
		return err
	}
	if len(m.ID) > MaxIDLen {
		return fmt.Errorf("%w: id is %d bytes, more than %d", ErrInvalidMessage, len(m.ID), MaxIDLen)
	}
	if !utf8.ValidString(m.ID) {
		return fmt.Errorf("%w: id is not valid UTF-8", ErrInvalidMessage)
	}
	if len(m.Key) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes, more than %d", ErrInvalidMessage, len(m.Key), MaxKeyLen)
	}
	if len(m.Value) == 0 {
		return fmt.Errorf("%w: value is empty", ErrInvalidMessage)
	}
	for _, h := range m.Headers {
		if h.Key == "" {
			return fmt.Errorf("%w: header with an empty name", ErrInvalidMessage)
		}
		// JSON, as the tables store headers, would replace invalid bytes,
		// and two names could become one.
		if !utf8.ValidString(h.Key) {
			return fmt.Errorf("%w: header name %q is not valid UTF-8", ErrInvalidMessage, h.Key)
		}
		if h.Key == HeaderID || h.Key == HeaderSource {
			return fmt.Errorf("%w: header %q is reserved for txmsg", ErrInvalidMessage, h.Key)
		}
	}
	// Checked here, not left to the database: a strict server fails the
	// insert with an opaque error, a lax one cuts the JSON, which can then
	// never be decoded.
	if n := encodedHeadersLen(m.Headers); n > MaxHeadersBytes {
		return fmt.Errorf("%w: headers take %d bytes stored, more than %d", ErrInvalidMessage, n, MaxHeadersBytes)
	}
	if n := RecordBytes(m.Key, m.Value, m.ID, m.Headers); n > maxValue {
		return fmt.Errorf("%w: the message takes %d bytes as a Kafka record (value %d, key %d, headers and overhead), more than the maximum %d",
			ErrInvalidMessage, n, len(m.Value), len(m.Key), maxValue)
	}
	return nil
}

// storedHeader is one header as the tables store it; internal/codec writes
// the same shape, and its tests check that the two sizes agree.
type storedHeader struct {
	K string `json:"k"`
	V []byte `json:"v"`
}

// encodedHeadersLen is the size of hs as the tables store them.
func encodedHeadersLen(hs []Header) int {
	if len(hs) == 0 {
		return 0
	}
	out := make([]storedHeader, len(hs))
	for i, h := range hs {
		out[i] = storedHeader{K: h.Key, V: h.Value}
	}
	b, err := json.Marshal(out)
	if err != nil {
		// Unreachable: strings and byte slices always marshal.
		return MaxHeadersBytes + 1
	}
	return len(b)
}

// ValidateTopic checks a Kafka topic name: 1 to 249 characters of ASCII
// letters, digits, '.', '_' and '-', and neither "." nor "..". The error wraps
// ErrInvalidMessage.
func ValidateTopic(topic string) error {
	switch {
	case topic == "":
		return fmt.Errorf("%w: empty topic", ErrInvalidMessage)
	case len(topic) > MaxTopicLen:
		return fmt.Errorf("%w: topic is %d characters, more than %d", ErrInvalidMessage, len(topic), MaxTopicLen)
	case topic == "." || topic == "..":
		return fmt.Errorf("%w: topic %q is not allowed", ErrInvalidMessage, topic)
	}
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: topic %q has character %q; only letters, digits, '.', '_' and '-' are allowed", ErrInvalidMessage, topic, c)
		}
	}
	return nil
}
