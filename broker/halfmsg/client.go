package halfmsg

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Client speaks the broker's HTTP API. Errors the broker answered are
// *APIError and match txmsg.ErrInvalidMessage, txmsg.ErrNotFound,
// txmsg.ErrConflict, txmsg.ErrUnauthorized and txmsg.ErrForbidden with
// errors.Is. It is safe for concurrent use.
//
// Concurrent Prepare calls share requests, and so do concurrent Commit and
// Rollback calls: while a request of a kind is in flight, later calls queue
// and the next request carries them all (the broker's prepare-batch and
// end-batch endpoints), each caller getting its own message's result or
// error; a second request leaves beside a first that has been out 20 ms (up
// to WithMaxBatchRequests). A lone call goes at once, alone. A broker
// without the batch endpoints is detected on the first batch, whose calls
// then go alone, as every later call does for a minute; then batching is
// tried again (behind a load balancer during an upgrade, the next broker
// may have them). WithoutBatching turns it off.
type Client struct {
	base     string
	hc       *http.Client
	token    string
	maxBatch int
	noBatch  atomic.Bool
	// batchOffUntil (Unix nanoseconds) is when batching is tried again after
	// a broker answered a batch endpoint 404; batchRetry is how long after.
	batchOffUntil atomic.Int64
	batchRetry    time.Duration
	prepares      *coalescer
	ends          *coalescer
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithHTTPClient sets the HTTP client (default: one with a 30s timeout and
// up to 64 idle connections to the broker).
func WithHTTPClient(hc *http.Client) ClientOption {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithToken sends token with every request (Authorization: Bearer): the
// producer group's token that the operator's registration of the group
// returned, or the operator's token (default: none, which a broker with
// authentication answers with txmsg.ErrUnauthorized).
func WithToken(token string) ClientOption { return func(c *Client) { c.token = token } }

// WithoutBatching makes every Prepare, Commit and Rollback call its own
// request on the single endpoints (default: concurrent calls share batch
// requests; see Client).
func WithoutBatching() ClientOption { return func(c *Client) { c.noBatch.Store(true) } }

// WithMaxBatchRequests sets how many requests of one kind (prepares; commits
// and rollbacks) may be in flight at once (default DefaultMaxBatchRequests,
// 2; at least 1). Calls that find one in flight queue for the next batch
// request; a further request leaves beside it only once it has been out 20
// ms, so a request that hangs does not hold the others back.
func WithMaxBatchRequests(n int) ClientOption { return func(c *Client) { c.maxBatch = n } }

// NewClient returns a Client for the broker at baseURL ("http://host:port",
// or https:// when the broker serves TLS).
func NewClient(baseURL string, opts ...ClientOption) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("halfmsg: client base URL %q: want http://host:port", baseURL)
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), maxBatch: DefaultMaxBatchRequests, batchRetry: batchRetryAfter}
	for _, o := range opts {
		o(c)
	}
	if strings.ContainsAny(c.token, " \t\r\n") {
		return nil, errors.New("halfmsg: client token contains white space")
	}
	if c.maxBatch < 1 {
		return nil, fmt.Errorf("halfmsg: client max batch requests %d: want at least 1 (WithoutBatching turns batching off)", c.maxBatch)
	}
	c.prepares = newCoalescer(c, "/v1/half-messages:prepare-batch", c.maxBatch)
	c.ends = newCoalescer(c, "/v1/half-messages:end-batch", c.maxBatch)
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		c.hc = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	}
	return c, nil
}

// do sends one request and decodes a 2xx answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("halfmsg: encode %s %s: %w", method, path, err)
		}
		body = b
	}
	return c.doRaw(ctx, method, path, body, out)
}

// doRaw is do with the body's JSON already encoded (nil: no body).
func (c *Client) doRaw(ctx context.Context, method, path string, in []byte, out any) error {
	var body io.Reader
	if in != nil {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("halfmsg: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("halfmsg: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("halfmsg: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error.Code == "" {
			eb.Error.Code = CodeInternal
			if resp.StatusCode == http.StatusNotFound {
				eb.Error.Code = CodeNotFound
			}
			eb.Error.Message = strings.TrimSpace(string(data))
		}
		return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("halfmsg: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Prepare stores a prepared half message and returns its id. The API carries
// headers as a JSON object of strings: a message whose header names or
// values are not UTF-8 text, or that repeats a header name, fails with
// txmsg.ErrInvalidMessage before anything is sent, instead of reaching Kafka
// altered. Concurrent calls share requests (see Client).
func (c *Client) Prepare(ctx context.Context, req PrepareRequest) (string, error) {
	if err := checkWireHeaders(req.Message.Headers); err != nil {
		return "", fmt.Errorf("halfmsg: prepare: %w", err)
	}
	body := NewPrepareBody(req)
	raw, err := encodeItem(body)
	if err != nil {
		return "", err
	}
	res, err := c.prepares.do(ctx, &batchCall{raw: raw, single: func(ctx context.Context) (ItemResult, error) {
		var out StateBody
		err := c.doRaw(ctx, http.MethodPost, "/v1/half-messages", raw, &out)
		return ItemResult{ID: out.ID, State: out.State}, err
	}})
	return res.ID, err
}

// Commit makes a prepared message deliverable; idempotent. See Store.Commit.
// Concurrent calls share requests (see Client).
func (c *Client) Commit(ctx context.Context, id string) (State, error) {
	return c.end(ctx, id, ActionCommit)
}

// Rollback drops a prepared message; idempotent. See Store.Rollback.
// Concurrent calls share requests (see Client).
func (c *Client) Rollback(ctx context.Context, id string) (State, error) {
	return c.end(ctx, id, ActionRollback)
}

// end commits or rolls back id (action), alone or in a batch request.
func (c *Client) end(ctx context.Context, id, action string) (State, error) {
	raw, err := encodeItem(EndItem{ID: id, Action: action})
	if err != nil {
		return 0, err
	}
	res, err := c.ends.do(ctx, &batchCall{raw: raw, single: func(ctx context.Context) (ItemResult, error) {
		var out StateBody
		err := c.doRaw(ctx, http.MethodPost, "/v1/half-messages/"+url.PathEscape(id)+"/"+action, nil, &out)
		return ItemResult{ID: out.ID, State: out.State}, err
	}})
	return res.State, err
}

// Resolve decides a discarded (or prepared) message as an operator. See
// Store.Resolve.
func (c *Client) Resolve(ctx context.Context, id string, commit bool, reason string) (State, error) {
	action := "rollback"
	if commit {
		action = "commit"
	}
	var out StateBody
	err := c.do(ctx, http.MethodPost, "/v1/half-messages/"+url.PathEscape(id)+"/resolve",
		ResolveBody{Action: action, Reason: reason}, &out)
	return out.State, err
}

// Get returns one message.
func (c *Client) Get(ctx context.Context, id string) (Info, error) {
	var out MessageBody
	if err := c.do(ctx, http.MethodGet, "/v1/half-messages/"+url.PathEscape(id), nil, &out); err != nil {
		return Info{}, err
	}
	info, err := out.Info()
	if err != nil {
		return Info{}, fmt.Errorf("halfmsg: get %s: %w", id, err)
	}
	return info, nil
}

// List returns one page of messages and the cursor of the next (0 at the
// end). See Store.List.
func (c *Client) List(ctx context.Context, f Filter) ([]Info, int64, error) {
	q := url.Values{}
	if f.State != 0 {
		q.Set("state", f.State.String())
	}
	if f.ProducerGroup != "" {
		q.Set("producer_group", f.ProducerGroup)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.After > 0 {
		q.Set("cursor", strconv.FormatInt(f.After, 10))
	}
	var out ListBody
	if err := c.do(ctx, http.MethodGet, "/v1/half-messages?"+q.Encode(), nil, &out); err != nil {
		return nil, 0, err
	}
	infos := make([]Info, 0, len(out.Messages))
	for _, m := range out.Messages {
		info, err := m.Info()
		if err != nil {
			return nil, 0, fmt.Errorf("halfmsg: list: %w", err)
		}
		infos = append(infos, info)
	}
	var next int64
	if out.NextCursor != "" {
		n, err := strconv.ParseInt(out.NextCursor, 10, 64)
		if err != nil {
			return nil, 0, errors.New("halfmsg: list: bad next_cursor in answer")
		}
		next = n
	}
	return infos, next, nil
}

// PutGroup registers producer group (or changes its check-back URL, and its
// options: WithDeliveryOrder) and needs the operator's token. When the group
// is new, has no credentials yet, or rotate is set, the answer carries the
// group's new token and secret; this is the only time they are shown, and a
// rotation stops the old ones at once.
func (c *Client) PutGroup(ctx context.Context, group, checkbackURL string, rotate bool, opts ...GroupOption) (Group, error) {
	path := "/v1/producer-groups/" + url.PathEscape(group)
	if rotate {
		path += "?rotate=true"
	}
	var g Group
	for _, o := range opts {
		o(&g)
	}
	b := GroupBody{CheckbackURL: checkbackURL}
	if g.Order != 0 {
		b.DeliveryOrder = &g.Order
	}
	var out Group
	err := c.do(ctx, http.MethodPut, path, b, &out)
	return out, err
}

// SetGroup registers the check-back URL and the options of a producer group,
// like PutGroup without rotation, and drops the credentials of a new group:
// for brokers whose groups never use their own token.
func (c *Client) SetGroup(ctx context.Context, group, checkbackURL string, opts ...GroupOption) error {
	_, err := c.PutGroup(ctx, group, checkbackURL, false, opts...)
	return err
}

// batchRetryAfter is how long calls go alone after a broker answered a
// batch endpoint 404.
const batchRetryAfter = time.Minute

// batching reports whether calls may share batch requests now.
func (c *Client) batching() bool {
	return !c.noBatch.Load() && time.Now().UnixNano() >= c.batchOffUntil.Load()
}
