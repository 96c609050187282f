package consumer

import (
	"context"
	"database/sql"
	"errors"
)

// Handler processes messages; it is a HandlerFunc or a TxHandlerFunc.
type Handler interface {
	isHandler()
}

// HandlerFunc handles a message with at-least-once semantics: it may see a
// message again after a crash or a rebalance, so its effects should be
// idempotent. A nil error acknowledges the message; an error retries it.
type HandlerFunc func(ctx context.Context, m Message) error

// TxHandlerFunc handles a message with effectively-once effects: it runs in
// a local transaction that also inserts the message's inbox row, and the
// transaction commits only when it returns nil. A message whose inbox row
// exists already is skipped without calling the handler. The handler must
// write through tx only, and must not commit or roll it back. Needs WithInbox.
type TxHandlerFunc func(ctx context.Context, tx *sql.Tx, m Message) error

func (HandlerFunc) isHandler()   {}
func (TxHandlerFunc) isHandler() {}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that the message skips its remaining attempts and
// goes straight to the dead-letter topic. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent says whether err was wrapped with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
