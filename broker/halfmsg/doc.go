// Package halfmsg is the producer side of txmsg's half messages: Client
// speaks the broker's HTTP API (mapping its error codes back to txmsg's
// sentinels, so errors.Is works over HTTP), Producer wraps a local
// transaction in prepare / commit / rollback with a check-back ledger row
// (see package checkback), and the API's types (State, PrepareRequest, Info,
// Filter and the JSON bodies) are shared with the broker daemon.
//
// It links only the standard library, database/sql and package txmsg (no
// kafka-go, cron, viper, Prometheus or MySQL driver), so a service that sends
// half messages pays for nothing else.
package halfmsg
