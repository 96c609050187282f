// Package bench measures txmsg under load on a user's own MySQL and Kafka:
// the latency of an outbox message from the producer's commit to a consumer
// group's read, and the throughput of draining a backlog, each beside a
// baseline measured in the same run (a dual write, a naive SKIP LOCKED
// loop), because shared machines are noisy and only ratios compare. It
// backs `txmsg bench` and the benchmarks of `make bench`.
//
// The benchmarks write to the database they are given: a table of fake
// business rows (txmsg_bench_orders), the outbox, and a copy of the outbox
// for the naive loop (txmsg_bench_naive); and to Kafka topics named after the
// run, which they try to delete at the end. Run them against a database no
// relay serves.
package bench
