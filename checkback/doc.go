// Package checkback is the check-back protocol of half messages, both sides.
//
// Broker side: a Scanner, scheduled with robfig/cron, claims prepared half
// messages whose check time has come (through a Store, which package broker
// implements with SELECT … FOR UPDATE SKIP LOCKED, so several broker
// instances never ask about one message at once), asks each producer with an
// HTTP POST through a bounded worker pool and a per-call timeout, and records
// the answer: commit or rollback resolve the message; unknown, a timeout, a
// connection error, a non-200 status or a garbled body count as a check and
// back off exponentially with jitter, capped by Config.MaxInterval. After the
// message's max checks it is discarded, never delivered by default.
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
// and the producer answers 200 with {"state":"commit"|"rollback"|"unknown"}.
package checkback
