package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/codec"
)

// Execer is what Publish writes through: *sql.Tx, *sql.Conn and *sql.DB all
// satisfy it. Pass the transaction that writes your business rows.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// table is the outbox table, created by migration 0001.
const table = "txmsg_outbox"

// insertPrefix starts Publish's INSERT; one "(?,…)" group per message follows.
const insertPrefix = "INSERT INTO " + table + " (id, shard, topic, msg_key, value, headers, created_at) VALUES "

// Defaults of a Publisher.
const (
	DefaultShards = 16
	// MaxBatch is the most messages one Publish call takes: MySQL allows
	// 65,535 placeholders in one statement, and a message uses 6.
	MaxBatch = 10000
)

// Publisher inserts messages into the txmsg_outbox table. It holds no
// connection and is safe for concurrent use.
type Publisher struct {
	shards   int
	maxValue int
}

// Option configures a Publisher.
type Option func(*Publisher)

// WithShards sets the number of shards messages are spread over by key
// (default 16). It must equal the relay's relay.shards setting.
func WithShards(n int) Option { return func(p *Publisher) { p.shards = n } }

// WithMaxValueBytes sets the largest message accepted, counted as the Kafka
// record it becomes: value, key and headers with txmsg's headers and the
// record's overhead (txmsg.RecordBytes; default txmsg.DefaultMaxValueBytes,
// 1 MiB less 2 KiB). Keep it at or below the topic's max.message.bytes, less
// room for a consumer's dead-letter headers, or Kafka will refuse the
// message and the relay will dead-letter it.
func WithMaxValueBytes(n int) Option { return func(p *Publisher) { p.maxValue = n } }

// NewPublisher returns a Publisher, checking its options.
func NewPublisher(opts ...Option) (*Publisher, error) {
	p := &Publisher{shards: DefaultShards, maxValue: txmsg.DefaultMaxValueBytes}
	for _, o := range opts {
		o(p)
	}
	if p.shards < 1 || p.shards > 4096 {
		return nil, fmt.Errorf("outbox: shards %d: want 1 to 4096", p.shards)
	}
	if p.maxValue < 1 {
		return nil, fmt.Errorf("outbox: max value bytes %d: want at least 1", p.maxValue)
	}
	return p, nil
}

var defaultPublisher, _ = NewPublisher()

// Publish inserts msgs into the outbox table through exec, with the
// default options. See (*Publisher).Publish.
func Publish(ctx context.Context, exec Execer, msgs ...txmsg.Message) error {
	return defaultPublisher.Publish(ctx, exec, msgs...)
}

// Publish inserts msgs through exec in one INSERT statement and no other
// round trip. Every message is validated first (topic name, value size,
// reserved headers); if any is invalid nothing is written and the error,
// wrapping txmsg.ErrInvalidMessage, names the message by index. A message
// with an empty ID gets a UUIDv7; msgs is not modified. Messages are
// delivered after the caller's transaction commits, never if it rolls back.
// An ID is unique per topic while its message is pending: one event may go
// to several topics under one ID, and the same ID in the same topic fails
// with a duplicate-key error from MySQL. IDs compare byte for byte
// ("Order-1" and "order-1" are two IDs).
func (p *Publisher) Publish(ctx context.Context, exec Execer, msgs ...txmsg.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if exec == nil {
		return errors.New("outbox: publish: nil Execer")
	}
	if len(msgs) > MaxBatch {
		return fmt.Errorf("%w: %d messages in one call, more than %d", txmsg.ErrInvalidMessage, len(msgs), MaxBatch)
	}
	args := make([]any, 0, 6*len(msgs))
	var q strings.Builder
	q.Grow(len(insertPrefix) + 30*len(msgs))
	q.WriteString(insertPrefix)
	for i := range msgs {
		m := &msgs[i]
		if err := m.Validate(p.maxValue); err != nil {
			return fmt.Errorf("outbox: message %d (topic %q): %w", i, m.Topic, err)
		}
		id := m.ID
		if id == "" {
			u, err := uuid.NewV7()
			if err != nil {
				return fmt.Errorf("outbox: message %d: generate id: %w", i, err)
			}
			id = u.String()
		}
		hdr, err := codec.EncodeHeaders(m.Headers)
		if err != nil {
			return fmt.Errorf("outbox: message %d: %w", i, err)
		}
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString("(?,?,?,?,?,?,UTC_TIMESTAMP(6))")
		args = append(args, id, txmsg.Shard(m.Key, id, p.shards), m.Topic, m.Key, m.Value, hdr)
	}
	if _, err := exec.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("outbox: insert %d messages into %s: %w", len(msgs), table, err)
	}
	return nil
}
