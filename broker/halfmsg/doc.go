// Package halfmsg is the producer side of txmsg's half messages: Client
// speaks the broker's HTTP API (mapping its error codes back to txmsg's
// sentinels, so errors.Is works over HTTP), Producer wraps a local
// transaction in prepare / commit / rollback with a check-back ledger row
// (see package checkback), and the API's types (State, PrepareRequest, Info,
// Filter and the JSON bodies) are shared with the broker daemon.
//
// Producer keeps two durable commits off the caller's path: the local
// transaction runs while the prepare is in flight (and commits only after
// the broker acknowledged it), and the message's commit or rollback is sent
// in the background once the local outcome is in the ledger, as RocketMQ
// sends endTransaction one-way (WithProducerSyncEnd turns that off). A
// background call that fails is reported (WithProducerOnEndError) and the
// broker's check-back resolves the message from the ledger, later.
//
// It links only the standard library, database/sql and package txmsg (no
// kafka-go, cron, viper, Prometheus or MySQL driver), so a service that sends
// half messages pays for nothing else.
package halfmsg
