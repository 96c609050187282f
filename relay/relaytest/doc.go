// Package relaytest is the conformance suite every relay.Source must pass:
// Pending reads one shard's deliverable rows in Seq order within its row and
// byte limits; Delivered and Remove take rows out, through the caller's
// transaction; Failed counts an attempt and keeps the row pending; Backlog
// counts what is pending; and the optional relay.Purger, relay.Changes and
// relay.Handover do what they say. Run it against a real database from the implementation's
// tests.
package relaytest
