package chaos

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // the consumer's database driver

	"github.com/txmsg/txmsg/consumer"
)

// consumerGroup is the group the soak's consumers join, and topicDLQ where
// they send dead letters.
const (
	consumerGroup = "chaos"
	topicDLQ      = "chaos.dlq"
)

// applyEffect records a message's effect; a second application of the same
// message would increment applied, which the inbox must prevent.
const applyEffect = `INSERT INTO chaos_effects (msg_id, topic, record_partition, record_offset, applied, first_at)
VALUES (?, ?, ?, ?, 1, UTC_TIMESTAMP(6))
ON DUPLICATE KEY UPDATE applied = applied + 1`

// RunConsumer is the soak's consumer program ("txmsg-chaos consume"): one
// member of the group, applying each message's effect in a business
// transaction with the inbox, until ctx ends.
func RunConsumer(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("consume", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("dsn", "", "database holding the inbox and chaos_effects")
	brokers := fs.String("brokers", "", "Kafka brokers, HOST:PORT[,...]")
	topics := fs.String("topics", "", "topics to read, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dsn == "" || *brokers == "" || *topics == "" {
		return errors.New("--dsn, --brokers and --topics are required")
	}
	db, err := sql.Open("mysql", *dsn)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := consumer.New(strings.Split(*brokers, ","), consumerGroup, strings.Split(*topics, ","),
		consumer.WithInbox(db), consumer.WithLogger(log), consumer.WithDeadLetterTopic(topicDLQ),
		consumer.WithGroupTimeouts(6*time.Second, time.Second, 6*time.Second, 500*time.Millisecond),
		consumer.WithBackoff(50*time.Millisecond, 2*time.Second))
	if err != nil {
		return err
	}
	return c.Run(ctx, consumer.TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, m consumer.Message) error {
		if _, err := tx.ExecContext(ctx, applyEffect, m.ID, m.Topic, m.Partition, m.Offset); err != nil {
			return fmt.Errorf("apply the effect of %s: %w", m.ID, err)
		}
		return nil
	}))
}
