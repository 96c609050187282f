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
// batches only after an answer of its carried it, so a producer that speaks
// only the one-check protocol is never sent one.
const BatchHeader = "Txmsg-Checkback-Batch"

// MaxBatch is the most checks a Handler takes in one batch request.
const MaxBatch = 64

// ErrBatchRefused is returned by Caller.CallBatch when the producer refused
// a batch request as such (HTTP 400, 404, 405, 413 or 415: a producer rolled
// back to a version without batches): nothing was checked, and the Caller
// sends that URL single checks from then on, until an answer offers batches
// again.
var ErrBatchRefused = errors.New("checkback: the producer refused a batch of checks")

// BatchChecker is a Checker that can answer several checks at once, as
// Ledger does with two statements for the whole batch. Handler uses it for
// batch requests; a Checker without it is asked check by check, concurrently.
type BatchChecker interface {
	Checker
	// CheckBatch returns one answer per request, in order. An error means
	// "unknown" for every request.
	CheckBatch(ctx context.Context, reqs []Request) ([]Answer, error)
}

type batchBody struct {
	Checks []Request `json:"checks"`
}

type batchAnswerBody struct {
	States []Answer `json:"states"`
}

// Caller asks producers, one check per request or several at once where the
// producer has said it takes batches (BatchHeader). It is safe for
// concurrent use.
type Caller struct {
	client *http.Client
	mu     sync.Mutex
	batch  map[string]int // URL → checks per request it offered, ≥ 2
}

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
	c.batch[url] = min(n, MaxBatch)
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
// {"checks":[…]} and returns one answer per request, in order, from its
// {"states":[…]}. A batch whose body would pass maxRequestBytes goes as
// several requests, one after the other. Errors are Call's, and
// ErrBatchRefused; an error means that no answer came for any request of
// the failed POST.
func (c *Caller) CallBatch(ctx context.Context, url, secret string, reqs []Request) ([]Answer, error) {
	body, err := json.Marshal(batchBody{Checks: reqs})
	if err != nil {
		return nil, fmt.Errorf("checkback: encode a batch of %d checks: %w", len(reqs), err)
	}
	if len(body) > maxRequestBytes && len(reqs) > 1 {
		h := len(reqs) / 2
		first, err := c.CallBatch(ctx, url, secret, reqs[:h])
		if err != nil {
			return nil, err
		}
		rest, err := c.CallBatch(ctx, url, secret, reqs[h:])
		if err != nil {
			return nil, err
		}
		return append(first, rest...), nil
	}
	data, err := c.post(ctx, url, secret, body)
	if se := (*StatusError)(nil); errors.As(err, &se) {
		switch se.Status {
		case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed,
			http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			c.mu.Lock()
			delete(c.batch, url)
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", ErrBatchRefused, err)
		}
	}
	if err != nil {
		return nil, err
	}
	var ab batchAnswerBody
	if json.Unmarshal(data, &ab) != nil || len(ab.States) != len(reqs) || !validAnswers(ab.States) {
		return nil, fmt.Errorf(`%w: %s answered a batch of %d checks with a body that is not {"states":[…]} with one of "commit", "rollback" or "unknown" per check`,
			ErrBadAnswer, url, len(reqs))
	}
	return ab.States, nil
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
