package consumer

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/testenv"
)

// One event copied to 20 topics under one id: a group reading them all
// applies all 20 effects (the inbox dedupes on group, topic and id), and a
// redelivered copy is still skipped.
func TestConsumerInboxOneIDTwentyTopics(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	db := newDB(t)
	if _, err := db.Exec(`CREATE TABLE fan_effects (
  seq   BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  topic VARCHAR(64) NOT NULL,
  id    VARCHAR(64) NOT NULL
)`); err != nil {
		t.Fatal(err)
	}
	var topics []string
	var recs []kafka.Message
	for i := range 20 {
		topic := fmt.Sprintf("fan-%02d", i)
		topics = append(topics, topic)
		recs = append(recs, record(topic, "order-17", "order-17-placed", "v"))
	}
	recs = append(recs, record(topics[0], "order-17", "order-17-placed", "v"))
	produce(t, k.Addrs, recs...)
	m := &recorder{}
	c, err := New(k.Addrs, "g", topics, fastGroup(), WithInbox(db), WithConcurrency(8), WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c, TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, msg Message) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO fan_effects (topic, id) VALUES (?, ?)`, msg.Topic, msg.ID)
		return err
	}))
	// Wait until all 21 records are handled, applied or skipped.
	testenv.Eventually(t, 30*time.Second, func() error {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM fan_effects`).Scan(&n); err != nil {
			return err
		}
		if d := m.get(&m.dup); n+d < len(recs) {
			return fmt.Errorf("%d effects and %d duplicates of %d records", n, d, len(recs))
		}
		return nil
	})
	if d := m.get(&m.dup); d != 1 {
		t.Errorf("%d records skipped as duplicates, want 1", d)
	}
	rows, err := db.Query(`SELECT topic, id FROM fan_effects ORDER BY topic`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var topic, id string
		if err := rows.Scan(&topic, &id); err != nil {
			t.Fatal(err)
		}
		if id != "order-17-placed" {
			t.Errorf("effect of %s has id %q", topic, id)
		}
		got = append(got, topic)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != strings.Join(topics, " ") {
		t.Fatalf("effects applied for %v, want one per topic %v", got, topics)
	}
}
