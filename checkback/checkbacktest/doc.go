// Package checkbacktest is the conformance suite every producer-side
// checkback.Checker must pass: answers follow the local transaction's
// outcome, repeated checks agree, a check racing an open transaction gives
// the transaction's outcome, and a transaction that starts after a check
// answered rollback cannot commit. A checkback.BatchChecker passes it again
// with every check asked in a batch beside other checks.
package checkbacktest
