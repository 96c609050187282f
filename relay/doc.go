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
// Pending rows are read so that rows of a transaction that has not
// committed are never published: in a REPEATABLE READ snapshot whatever the
// connection's default, or, unless the connections run at READ UNCOMMITTED,
// on the pool by a source that reads with one statement (SingleRead) or
// keeps its own snapshot (ConsistentRead). Charging a refused row an attempt and dead-lettering it
// run in a transaction that holds the shard's lease row and checks its
// fencing version, so a worker whose lease was claimed changes nothing. At
// most Config.Concurrency rounds run at once. A round holds at most
// Config.BatchSize rows and about Config.BatchBytes of keys and values, which
// bounds memory whatever the message sizes. Its rows for one partition go in
// seq order, in as few produce requests as the request size allows, each sent
// only once the one before it was acknowledged, so a failed request never
// lets later rows of its keys through first. A round's partitions go
// together, one request per leader broker, and rounds that publish at the
// same time share requests (see kafkax.Producer.ProduceAll). Requests are
// plain request/response calls that are never retried behind the engine's
// back, and a round ends, with no request left under way, a heartbeat before
// the shard's lease could expire; a stopping engine releases a lease only
// after its round ended.
//
// Idle shards do not poll: a change probe looks every Config.PollMin for rows
// that arrived since its last look, and for rows in the seqs it skipped (a
// transaction that took a lower seq may commit later), with one range query
// on the seq index per source, and wakes only the shards that got some; each
// shard still polls on its own at most Config.PollMax apart, which finds a
// row committed later than the probe keeps asking. The outbox's probe reads
// the rows of the engine's own shards whole and hands them to their shards,
// which publish them without reading them again; a shard reads itself when it has just been claimed,
// when a round left rows behind or a mark failed, when a probe may have
// missed a row (a transaction held its seq past the gap timeout and that seq
// is not final yet: handing the later rows of its key over would send them
// first), and at least every Config.PollMax (see handoff). Delivered rows of all
// shards are marked together: a round that ends while a marking transaction
// runs joins the next one (group commit), and a transaction of few rows
// starts at least 10 ms after the last, so a steady trickle does not cost a
// durable commit per shard round. A round does not wait for its mark: the
// shard's next round skips the rows being marked, so rows arriving meanwhile
// do not wait for a durable commit; a failed mark sends the shard's next read
// back to its start, and its rows are published again. Engine.Wake lets an
// in-process producer (the broker) wake a shard directly.
//
// Open the engine's *sql.DB with interpolateParams=true, as the txmsg
// binaries do: its statements are small and many, and with server-side
// prepares each costs three round trips instead of one (at 1,000 msg/s the
// prepares were a fifth of the relay's CPU, and commit → read p99 fell from
// about 20 ms to 6–9 ms without them).
//
// Failures are isolated per topic, partition and key, each with its own
// exponential backoff, while the rest of the shard flows: a partition Kafka
// could not take now is retried, in order, for as long as it takes; a message
// Kafka refuses for good (too large, invalid) and every message of a topic it
// refuses as a whole (unknown and not created, not authorized) is retried
// Config.MaxAttempts times, then moved to txmsg_dead_letters with its error.
// Later rows of the same topic and key wait behind such a message until it is
// delivered or dead-lettered; other keys do not wait. A row whose stored
// headers do not decode is dead-lettered at once, as stored.
package relay
