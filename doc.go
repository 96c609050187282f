// Package txmsg holds what every part of txmsg shares: the Message a service
// publishes, the Kafka header names the relay writes, and the sentinel errors
// callers branch on.
//
// txmsg makes "write to my database and publish a message" atomic for Go
// services on MySQL and Kafka, in two ways: the transactional outbox (package
// outbox, relayed by package relay) and RocketMQ-style half messages (package
// broker, with package checkback). Package consumer reads what they deliver and
// turns at-least-once delivery into effectively-once effects.
package txmsg
