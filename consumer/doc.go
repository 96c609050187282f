// Package consumer is txmsg's consumer SDK: it reads a Kafka consumer group
// and turns at-least-once delivery into effectively-once effects.
//
//	c, err := consumer.New(brokers, "billing", []string{"orders"},
//		consumer.WithInbox(db), consumer.WithConcurrency(8))
//	err = c.Run(ctx, consumer.TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, m consumer.Message) error {
//		_, err := tx.ExecContext(ctx, "INSERT INTO invoices (order_id) VALUES (?)", m.Key)
//		return err
//	}))
//
// Guarantees:
//   - Commits never run ahead of processing. Each partition commits its low
//     watermark: the last offset below which every fetched message is
//     finished (handled, skipped as a duplicate, moved to a retry tier or
//     dead-lettered). Offsets are committed every WithCommitInterval and
//     once more at shutdown.
//   - Messages of one key are handled one at a time, in offset order, also
//     through in-place retries. Different keys of one partition run in
//     parallel on up to WithConcurrency workers (lanes).
//   - A TxHandlerFunc runs in a local transaction that inserts the message's
//     inbox row (group, topic, txmsg-id); a duplicate delivery finds the row and is
//     skipped, so each message's effects commit once. A HandlerFunc is at
//     least once.
//   - A failing message is retried in place with exponential backoff and
//     jitter, then written to the dead-letter topic "<topic>.<group>.dlq"
//     with headers naming its origin, error and attempts; Permanent(err)
//     skips the retries. WithRetryTiers moves it through delay topics
//     instead, which does not block its key but gives up its order.
//
// Flow control: each lane buffers up to 256 fetched messages. A lane held up
// by retries fills its buffer and then stalls fetching for the whole
// consumer until it moves on, as RocketMQ's process queue does.
//
// Rebalances: kafka-go drops messages of revoked partitions that were not
// yet fetched, but messages already handed to a lane are still handled, and
// their offsets may be committed by this member after the partition moved.
// Both are safe: the commit never passes finished work, and the inbox
// absorbs the second delivery (a HandlerFunc may see it twice).
//
// Partitions are allocated by one of five strategies (AverageBalancer,
// RoundRobinBalancer, ConsistentHashBalancer, StaticBalancer,
// RackBalancer), by option or by name with BalancerByName. Every member of a
// group must use the same strategy.
//
// The package imports neither viper nor Prometheus; internal/metrics adapts
// the Metrics hooks to Prometheus.
package consumer
