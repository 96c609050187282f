package checkback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// BatchHeader is the header a Handler sets on every answer to say how many
// checks it takes in one request (MaxBatch). A broker sends a producer
// batches only after one of the producer's answers carried this header, so
// a producer that speaks only the one-check protocol is never sent one.
const BatchHeader = "Txmsg-Checkback-Batch"

// MaxBatch is the most checks a Handler takes in one batch request.
const MaxBatch = 64

// ErrBatchRefused is returned by Caller.CallBatch when the producer did not
// answer a batch as one: an HTTP status other than 200 (a producer rolled
// back to a version without batches answers 400) or a body that is not a
// batch answer. Nothing is known of its checks: ask them one by one. Where
// the answer says the producer does not serve batches (a status such as 400,
// 404 or 413, or a body that is not a batch answer) the Caller sends that
// URL one check per request from then on, until an answer offers batches
// again; after a failure (5xx, 429) it keeps offering it batches.
var ErrBatchRefused = errors.New("checkback: the producer did not answer a batch of checks")

// PartialError is CallBatch's error when a batch went as several requests
// and one failed after others were answered: Answers holds the answers of
// the first len(Answers) checks, in order, and Err (which it wraps) why the
// rest have none.
type PartialError struct {
	Answers []Answer
	Err     error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("checkback: %d checks of the batch answered, then: %v", len(e.Answers), e.Err)
}

// Unwrap returns Err.
func (e *PartialError) Unwrap() error { return e.Err }

// BatchChecker is a Checker that can answer several checks at once, as
// Ledger does with one read for the whole batch. Handler uses it for batch
// requests; a Checker without it is asked check by check, a few at a time.
type BatchChecker interface {
	Checker
	// CheckBatch returns one answer per request, in order; a check it
	// cannot answer (ctx ended while it waited, say) answers unknown alone.
	// An error means "unknown" for every request.
	CheckBatch(ctx context.Context, reqs []Request) ([]Answer, error)
}

// batchBody is a batch request. TimeoutMS is how long the broker waits for
// the answer, less a margin: a check still waiting then (on an open local
// transaction) answers unknown, and the others of the batch are answered.
type batchBody struct {
	Checks    []Request `json:"checks"`
	TimeoutMS int64     `json:"timeout_ms,omitempty"`
}

type batchAnswerBody struct {
	States []Answer `json:"states"`
}

// Caller asks producers, one check per request or several at once where the
// producer has said it takes batches (BatchHeader). Make one with
// NewCaller; it is safe for concurrent use.
type Caller struct {
	client *http.Client
	mu     sync.Mutex
	batch  map[string]int // URL → checks per request it offered, ≥ 2
}

// maxBatchURLs bounds the URLs a Caller remembers as taking batches (a
// message may name its own check-back URL); one past it is asked one check
// per request.
const maxBatchURLs = 1024

// NewCaller returns a Caller that sends its requests through client.
func NewCaller(client *http.Client) *Caller {
	return &Caller{client: client, batch: map[string]int{}}
}

// BatchSize returns how many checks the producer at url takes in one
// request: 1 until one of its answers offered more.
func (c *Caller) BatchSize(url string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.batch[url], 1)
}

// learn records what an answer of url said about batches: the header's
// number, at most MaxBatch, or one check per request when it has none.
func (c *Caller) learn(url string, h http.Header) {
	n, err := strconv.Atoi(h.Get(BatchHeader))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil || n < 2 {
		delete(c.batch, url)
		return
	}
	if _, ok := c.batch[url]; ok || len(c.batch) < maxBatchURLs {
		c.batch[url] = min(n, MaxBatch)
	}
}

// forget asks url one check per request until an answer offers batches.
func (c *Caller) forget(url string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.batch, url)
}

// Call asks the producer at url about req, as the function Call does, and
// learns from the answer whether the producer takes batches.
func (c *Caller) Call(ctx context.Context, url, secret string, req Request) (Answer, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, fmt.Errorf("checkback: encode request for %s: %w", req.ID, err)
	}
	data, err := c.post(ctx, url, secret, body)
	if err != nil {
		return 0, err
	}
	var ab answerBody
	// The decoding error is dropped: it would quote the answer.
	if json.Unmarshal(data, &ab) != nil || ab.State == 0 {
		return 0, fmt.Errorf(`%w: %s answered a body that is not {"state":"commit"|"rollback"|"unknown"}`, ErrBadAnswer, url)
	}
	return ab.State, nil
}

// CallBatch asks the producer at url about every request in one POST of
// {"checks":[…],"timeout_ms":…} and returns one answer per request, in
// order, from its {"states":[…]}; timeout_ms is three quarters of what is
// left of ctx's deadline. A batch of more than MaxBatch, or whose body would
// pass what a Handler reads, goes as several requests, one after the other.
// Errors are Call's transport errors, and ErrBatchRefused; an error means
// that no answer came for any request, except a *PartialError, which holds
// the answers of the requests sent before one failed.
func (c *Caller) CallBatch(ctx context.Context, url, secret string, reqs []Request) ([]Answer, error) {
	b := batchBody{Checks: reqs}
	if dl, ok := ctx.Deadline(); ok {
		b.TimeoutMS = max(time.Until(dl)*3/4, time.Millisecond).Milliseconds()
	}
	body, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("checkback: encode a batch of %d checks: %w", len(reqs), err)
	}
	if len(reqs) > 1 && (len(reqs) > MaxBatch || len(body) > maxRequestBytes) {
		h := len(reqs) / 2
		// A PartialError of the first half answers a prefix of reqs too.
		first, err := c.CallBatch(ctx, url, secret, reqs[:h])
		if err != nil {
			return nil, err
		}
		rest, err := c.CallBatch(ctx, url, secret, reqs[h:])
		if pe := (*PartialError)(nil); errors.As(err, &pe) {
			return nil, &PartialError{Answers: append(first, pe.Answers...), Err: pe.Err}
		}
		if err != nil {
			return nil, &PartialError{Answers: first, Err: err}
		}
		return append(first, rest...), nil
	}
	data, err := c.post(ctx, url, secret, body)
	if se := (*StatusError)(nil); errors.As(err, &se) {
		if refusesShape(se.Status) {
			c.forget(url)
		}
		return nil, fmt.Errorf("%w: %w", ErrBatchRefused, err)
	}
	if err != nil {
		return nil, err
	}
	var ab batchAnswerBody
	if json.Unmarshal(data, &ab) != nil || len(ab.States) != len(reqs) || !validAnswers(ab.States) {
		c.forget(url)
		return nil, fmt.Errorf(`%w: %w: %s answered a batch of %d checks with a body that is not {"states":[…]} with one of "commit", "rollback" or "unknown" per check`,
			ErrBatchRefused, ErrBadAnswer, url, len(reqs))
	}
	return ab.States, nil
}

// refusesShape reports whether an answer's status says that the producer
// does not serve a batch request at all (an older version reading one check
// answers 400), rather than that it failed this once (5xx, 429, 401): only
// then is it asked one check per request until it offers batches again, so
// that a passing failure does not cost the producer its batches.
func refusesShape(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge,
		http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, http.StatusNotImplemented:
		return true
	}
	return false
}

func validAnswers(as []Answer) bool {
	for _, a := range as {
		if a < AnswerUnknown || a > AnswerRollback {
			return false
		}
	}
	return true
}

// post sends body to url signed with secret and returns the answer's body,
// learning from its headers whether url takes batches.
func (c *Caller) post(ctx context.Context, url, secret string, body []byte) ([]byte, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("checkback: request to %s: %w", url, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if secret != "" {
		hr.Header.Set(SignatureHeader, Sign(secret, time.Now(), body))
	}
	resp, err := c.client.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("checkback: call %s: %w", url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, fmt.Errorf("checkback: read answer of %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{URL: url, Status: resp.StatusCode}
	}
	c.learn(url, resp.Header)
	return data, nil
}
