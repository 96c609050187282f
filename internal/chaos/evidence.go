package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// order is a committed business row: its message's topic, key and place in
// the key's order, and when its transaction ran.
type order struct {
	topic, key string
	n          int
	created    time.Time
}

// effect is a consumer's effect of one message.
type effect struct {
	topic     string
	partition int32
	applied   int
	first     time.Time
}

// evidence is what the soak found at the end.
type evidence struct {
	orders map[string]order // committed business rows by message id
	// logs holds each topic's records in log order; for the doomed topic,
	// the deleted incarnations' records come first.
	logs     map[string][]record
	consumed map[string]bool // topics the consumers read
	effects  map[string]effect
	// deadLettered are relay dead letters, discarded half messages nobody
	// resolved, consumerDLQ messages consumers gave up on.
	deadLettered, discarded, consumerDLQ map[string]bool
	// pendingShards counts shards still holding undelivered rows.
	pendingShards int
}

const (
	selectOrders = `SELECT msg_id, topic, msg_key, n, created_at FROM chaos_orders
UNION ALL SELECT msg_id, topic, msg_key, n, created_at FROM chaos_payments`
	selectEffects       = `SELECT msg_id, topic, record_partition, applied, first_at FROM chaos_effects`
	selectDeadLetters   = `SELECT id FROM txmsg_dead_letters`
	selectDiscarded     = `SELECT id FROM txmsg_half_messages WHERE state = 5`
	selectPendingShards = `SELECT COUNT(*) FROM (
  SELECT DISTINCT 'outbox', shard FROM txmsg_outbox
  UNION SELECT DISTINCT 'half', shard FROM txmsg_half_messages WHERE state IN (1, 2)) pending`
)

// collect reads the business tables, txmsg's tables and every topic.
func (s *soak) collect(ctx context.Context) (*evidence, error) {
	ev := &evidence{orders: map[string]order{}, logs: map[string][]record{}, effects: map[string]effect{},
		consumed: map[string]bool{topicOutbox: true, topicHalf: true}}
	db := s.db.db
	err := scanRows(ctx, db, selectOrders, func(rows *sql.Rows) error {
		var id string
		var o order
		err := rows.Scan(&id, &o.topic, &o.key, &o.n, &o.created)
		ev.orders[id] = o
		return err
	})
	if err != nil {
		return nil, err
	}
	err = scanRows(ctx, db, selectEffects, func(rows *sql.Rows) error {
		var id string
		var e effect
		err := rows.Scan(&id, &e.topic, &e.partition, &e.applied, &e.first)
		ev.effects[id] = e
		return err
	})
	if err != nil {
		return nil, err
	}
	if ev.deadLettered, err = idSet(ctx, db, selectDeadLetters); err != nil {
		return nil, err
	}
	if ev.discarded, err = idSet(ctx, db, selectDiscarded); err != nil {
		return nil, err
	}
	if err := db.QueryRowContext(ctx, selectPendingShards).Scan(&ev.pendingShards); err != nil {
		return nil, fmt.Errorf("chaos: count pending shards: %w", err)
	}
	return ev, s.readTopics(ctx, ev)
}

// readTopics reads every topic of the soak with kcat.
func (s *soak) readTopics(ctx context.Context, ev *evidence) error {
	s.mu.Lock()
	ev.logs[topicDoomed] = append([]record(nil), s.deleted...)
	s.mu.Unlock()
	ev.consumerDLQ = map[string]bool{}
	for _, topic := range []string{topicOutbox, topicHalf, topicDoomed, topicDLQ} {
		if !s.kafka.hasTopic(topic) {
			continue
		}
		recs, err := readTopic(ctx, s.kafka.addr, topic)
		if err != nil {
			return err
		}
		if topic == topicDLQ {
			for _, r := range recs {
				ev.consumerDLQ[r.id] = true
			}
			continue
		}
		ev.logs[topic] = append(ev.logs[topic], recs...)
	}
	return nil
}

// scanRows runs query and calls scan on each row.
func scanRows(ctx context.Context, db *sql.DB, query string, scan func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return fmt.Errorf("chaos: %s: %w", query, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return fmt.Errorf("chaos: %s: %w", query, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("chaos: %s: %w", query, err)
	}
	return nil
}

// idSet returns the first column of query's rows as a set.
func idSet(ctx context.Context, db *sql.DB, query string) (map[string]bool, error) {
	set := map[string]bool{}
	err := scanRows(ctx, db, query, func(rows *sql.Rows) error {
		var id string
		err := rows.Scan(&id)
		set[id] = true
		return err
	})
	return set, err
}
