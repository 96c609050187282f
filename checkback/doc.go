// Package checkback is the check-back protocol of half messages, both sides.
// It links only the standard library and package txmsg: a producer service
// imports it (and broker/halfmsg) without kafka-go, cron or a MySQL driver.
//
// Broker side: Call asks a producer with one HTTP POST and parses its
// answer, and a Caller asks several checks in one POST where the producer
// takes batches; the broker's check-back scanner (broker.Scanner) decides whom to
// ask and when, with backoff and a bound.
//
// Producer side: Handler turns a Checker into the http.Handler the broker
// calls, and LedgerChecker answers from the txmsg_checkback_ledger table,
// which the producer's local transaction writes a row into (Ledger.Record).
// A check inserts a rollback marker under the same primary key with INSERT
// IGNORE, as DTM's barrier does: while the local transaction is open the
// check waits for its row lock; if the transaction committed the check finds
// its row and answers commit; if it rolled back (or never started) the marker
// wins, the answer is rollback, and a late local transaction fails on the
// duplicate key instead of committing a message nobody will deliver.
//
// The wire format: the broker POSTs
//
//	{"id":"…","producer_group":"…","topic":"…","key":"…","headers":{"k":"v"},"check_count":1}
//
// with the header
//
//	Txmsg-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>
//
// signed with the producer group's secret, and the producer answers 200 with
// {"state":"commit"|"rollback"|"unknown"}. A producer whose answers carry
// BatchHeader (Handler's do) may be sent batches, {"checks":[{…},{…}]}
// signed the same way, and answers {"states":[…]}, one per check in order;
// Caller learns which producers take them, so one that speaks only the
// one-check protocol is never sent a batch. Handler refuses a request that is
// unsigned, wrongly signed or signed more than MaxSignatureAge from now with
// 401 and records nothing: otherwise anyone who reaches it could make the
// ledger roll back a transaction that has not started yet.
package checkback
