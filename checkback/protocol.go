package checkback

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Answer is a producer's verdict on a half message.
type Answer uint8

// Answers. The zero Answer is invalid.
const (
	// AnswerUnknown: the producer cannot tell yet; the broker asks again later.
	AnswerUnknown Answer = iota + 1
	// AnswerCommit: the local transaction committed; deliver the message.
	AnswerCommit
	// AnswerRollback: the local transaction rolled back; drop the message.
	AnswerRollback
)

var answerNames = [...]string{AnswerUnknown: "unknown", AnswerCommit: "commit", AnswerRollback: "rollback"}

// String returns "unknown", "commit" or "rollback".
func (a Answer) String() string {
	if a >= AnswerUnknown && a <= AnswerRollback {
		return answerNames[a]
	}
	return fmt.Sprintf("Answer(%d)", uint8(a))
}

// MarshalText implements encoding.TextMarshaler.
func (a Answer) MarshalText() ([]byte, error) {
	if a < AnswerUnknown || a > AnswerRollback {
		return nil, fmt.Errorf("checkback: invalid answer %d", uint8(a))
	}
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *Answer) UnmarshalText(b []byte) error {
	for i := AnswerUnknown; i <= AnswerRollback; i++ {
		if string(b) == answerNames[i] {
			*a = i
			return nil
		}
	}
	return fmt.Errorf("checkback: answer %q: want commit, rollback or unknown", b)
}

// Request is what the broker asks a producer about one half message.
type Request struct {
	ID            string            `json:"id"`
	ProducerGroup string            `json:"producer_group"`
	Topic         string            `json:"topic"`
	Key           string            `json:"key,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	// CheckCount numbers this check, from 1.
	CheckCount int `json:"check_count"`
}

// Checker answers check-backs. Check may block (LedgerChecker waits for an
// open local transaction); it must honour ctx. An error means "unknown".
type Checker interface {
	Check(ctx context.Context, req Request) (Answer, error)
}

// CheckerFunc adapts a function to Checker.
type CheckerFunc func(ctx context.Context, req Request) (Answer, error)

// Check calls f.
func (f CheckerFunc) Check(ctx context.Context, req Request) (Answer, error) { return f(ctx, req) }

type answerBody struct {
	State Answer `json:"state"`
}

// maxAnswerBytes bounds how much of a producer's answer is read.
const maxAnswerBytes = 64 << 10

// ErrBadAnswer is returned by Call when the producer answered with a status
// other than 200 (a *StatusError, which matches it) or a body that is not a
// valid answer.
var ErrBadAnswer = errors.New("checkback: bad answer")

// StatusError is returned by Call when the producer answered an HTTP status
// other than 200, a redirect included: Call follows none. It matches
// ErrBadAnswer with errors.Is.
type StatusError struct {
	// URL is the check-back URL called.
	URL string
	// Status is the HTTP status of the answer.
	Status int
}

// Error implements error.
func (e *StatusError) Error() string {
	return fmt.Sprintf("checkback: %s answered HTTP status %d", e.URL, e.Status)
}

// Is reports whether target is ErrBadAnswer.
func (e *StatusError) Is(target error) bool { return target == ErrBadAnswer }

// Call asks the producer at url about req with an HTTP POST through client
// and returns its answer. With a secret (the producer group's), the request
// carries a SignatureHeader; with none it goes unsigned, and a Handler
// refuses it. Transport errors, statuses other than 200 and bodies that are
// not {"state":"commit"|"rollback"|"unknown"} are errors (*StatusError and
// ErrBadAnswer for the last two); the caller counts them as unknown. No
// error repeats bytes of the answer. The deadline comes from ctx; client
// decides about redirects (the broker's follows none).
func Call(ctx context.Context, client *http.Client, url, secret string, req Request) (Answer, error) {
	return NewCaller(client).Call(ctx, url, secret, req)
}
