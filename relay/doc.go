// Package relay is the delivery engine: it drains deliverable rows from one
// or more Sources (the outbox table; committed half messages) into Kafka, at
// least once and in order per key.
//
// Rows carry a shard (murmur2(key) mod Config.Shards, stored at insert). Each
// shard of each source is leased to one Engine at a time through the
// txmsg_relay_leases table (owner, expiry, fencing version; renewed by
// heartbeat, taken over on expiry), and live engines each take a fair share of
// the shards. For each shard it owns an engine runs one loop: read the oldest
// pending rows in seq order (state-based: a row is pending until marked, so a
// transaction that commits late with a lower seq is never skipped), write them
// to Kafka with acks=all, and only then delete or mark them.
//
// At most Config.Concurrency rounds run at once, each with a kafka-go Writer
// of its own sized to carry the round in one produce batch per partition, so
// a batch that fails cannot let later rows of its key through first. A round
// holds at most Config.BatchSize rows and about Config.BatchBytes of keys and
// values, which bounds memory whatever the message sizes. A round ends, and
// nothing more is written, a heartbeat before the shard's lease could expire.
//
// Idle shards do not poll hard: a watcher looks every Config.PollMin for rows
// inserted since its last look (one range query on the seq index per source) and
// wakes only the shards that got some; each shard still polls on its own at
// most Config.PollMax apart, which is what finds a row committed late with a
// lower seq. Engine.Wake lets an in-process producer (the broker) wake a shard
// directly.
//
// Failures: a batch Kafka could not take is retried with exponential backoff
// and jitter, in order, for as long as it takes; a message Kafka refuses for
// good (too large, invalid topic) is retried Config.MaxAttempts times, then
// moved to txmsg_dead_letters with its error, and the shard moves on.
package relay
