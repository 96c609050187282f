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
//     dead-lettered). Offsets are committed every WithCommitInterval, at
//     the end of each group generation and at shutdown.
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
//     instead, which does not block its key but gives up its order. Run
//     creates the dead-letter and retry topics that do not exist before it
//     joins the group, and fails at once, naming the topic and the
//     permission, if Kafka refuses.
//   - No message is retried forever without an error: transaction conflicts
//     and database failures (which spend no attempt, so that neither
//     concurrency nor a failover dead-letters a message) and writes to the
//     dead-letter and retry
//     topics are retried a bounded number of times (about four minutes
//     with the default backoff); then Run shuts down gracefully and returns
//     an error wrapping ErrStuck. The message is not committed, so it comes
//     again when the group runs again.
//
// Flow control: each partition is fetched on its own, and each lane buffers
// up to 256 of its messages. A partition's in-flight work, its oldest
// unfinished message and everything fetched after it, is bounded
// (WithInFlightLimit, default 10000 messages or 64 MiB): while a key is
// stuck in retries, its partition stops fetching at the limit, so memory
// stays bounded; other partitions go on.
//
// Rebalances: each group generation (one assignment) has its own partition
// workers and commits only through that generation, for the partitions it
// assigned. When it ends, messages of the partitions not yet started are
// dropped, running handlers get the drain timeout (keep it under the
// rebalance timeout of WithGroupTimeouts) before their context is canceled,
// finished offsets are committed, and only then does the member rejoin. So
// a member never works or commits a partition it lost; the new owner
// starts after the old owner's last commit, and the inbox absorbs the
// redelivery of messages that were running (a HandlerFunc may see them
// twice).
//
// Partitions are allocated by one of five strategies, by option or by name
// with BalancerByName: "average" and "round-robin" (kafka-go's
// RangeGroupBalancer and RoundRobinGroupBalancer, given the partitions in
// order), ConsistentHashBalancer, StaticBalancer and RackBalancer. Every
// member of a group must use the same strategy.
//
// The package imports neither viper, cron nor Prometheus: measurements go to
// hooks (WithHooks), and txmsgprom.NewConsumer adapts them to Prometheus.
package consumer
