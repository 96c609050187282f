// Package chaos is txmsg's chaos soak, run by `make chaos` (cmd/txmsg-chaos).
//
// One run starts an in-process Kafka (kfake) and a fresh MariaDB/MySQL
// database, runs several `txmsg relay`, `txmsg broker` and consumer
// processes, and has producers write outbox messages and half messages in
// real business transactions (10% rolled back, some half-message commit
// calls dropped so that check-back must resolve them). Meanwhile it strikes
// with faults at random: kill -9 and restart of any process, SIGSTOP of a
// relay past its lease, produce requests refused or answered after the
// lease, a topic deleted, every database connection killed.
//
// Then it stops the faults, lets the system drain, reads every topic with a
// third-party client (kcat) and the business tables, and reports one line of
// figures (see Figures). The run passes only when nothing committed was lost,
// nothing rolled back was published, no key was reordered, no effect was
// applied twice and nothing stalled.
//
// Every child process runs in its own process group and is killed when the
// run ends; the run is bounded by its duration plus the drain and a grace
// period, and uses loopback addresses only.
package chaos
