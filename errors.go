package txmsg

import "errors"

// Sentinel errors shared by all packages; compare with errors.Is.
var (
	// ErrInvalidMessage: a message breaks a rule (topic name, size, reserved
	// header). Nothing was written.
	ErrInvalidMessage = errors.New("txmsg: invalid message")
	// ErrNotFound: no message has the given id.
	ErrNotFound = errors.New("txmsg: not found")
	// ErrConflict: the requested state transition is not allowed from the
	// message's current state (commit after rollback, for example).
	ErrConflict = errors.New("txmsg: illegal state transition")
	// ErrClosed: the object was used after Close.
	ErrClosed = errors.New("txmsg: closed")
	// ErrUnauthorized: the request carried no valid token (the broker API
	// answers 401 unauthorized).
	ErrUnauthorized = errors.New("txmsg: unauthorized")
	// ErrForbidden: the token is valid but may not do this, such as a
	// producer group's token preparing as another group or resolving a
	// message (the broker API answers 403 forbidden). Another group's
	// message is not found (ErrNotFound), as an unknown id.
	ErrForbidden = errors.New("txmsg: forbidden")
)
