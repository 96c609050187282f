// Package demo is `txmsg dev`: the whole outbox path in one process. Producers
// write demo_orders rows plus an outbox message per order in one transaction
// (rolling some back on purpose), a relay publishes the messages, and a
// consumer group reads them back; the demo counts what arrived and reports
// any committed message missing and any rolled-back one delivered (a
// phantom). The command wires it to a database and an embedded Kafka.
package demo
