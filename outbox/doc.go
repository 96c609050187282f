// Package outbox is the producer side of the transactional outbox: Publish
// inserts messages into the txmsg_outbox table inside the caller's own
// transaction, so they exist exactly when the business rows beside them
// commit. The relay daemon (txmsg relay) then delivers them to Kafka.
//
//	tx, _ := db.BeginTx(ctx, nil)
//	tx.ExecContext(ctx, "INSERT INTO orders ...")
//	outbox.Publish(ctx, tx, txmsg.Message{Topic: "orders", Key: []byte(orderID), Value: body})
//	tx.Commit()
//
// The package imports neither viper nor Prometheus: only the MySQL-facing
// standard library and a UUID generator.
package outbox
