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
//     finished (handled, skipped as a duplicate, or dead-lettered).
//   - Messages of one key are handled one at a time, in offset order, also
//     through retries. Different keys of one partition run in parallel on up
//     to WithConcurrency workers.
//   - A TxHandlerFunc runs in a local transaction that inserts the message's
//     inbox row (group, txmsg-id); a duplicate delivery finds the row and is
//     skipped, so each message's effects commit once.
//   - A failing message is retried in place with exponential backoff and
//     jitter, then written to the dead-letter topic "<topic>.<group>.dlq"
//     with headers naming its origin, error and attempts; Permanent(err)
//     skips the retries.
//
// Partitions are allocated by one of five strategies (AverageBalancer,
// RoundRobinBalancer, ConsistentHashBalancer, StaticBalancer,
// RackBalancer), by option or by name with BalancerByName.
//
// The package imports neither viper nor Prometheus; internal/metrics adapts
// the Metrics hooks to Prometheus.
package consumer
