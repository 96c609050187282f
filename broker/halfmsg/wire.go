package halfmsg

import (
	"encoding/base64"
	"fmt"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/txmsg/txmsg"
)

// Stable error codes of the HTTP API, in {"error":{"code","message"}}.
const (
	// CodeInvalidRequest (400): a malformed body or an invalid message; the
	// Go client maps it to txmsg.ErrInvalidMessage.
	CodeInvalidRequest = "invalid_request"
	// CodeTooLarge (413): the body is over the size limit; mapped to
	// txmsg.ErrInvalidMessage.
	CodeTooLarge = "too_large"
	// CodeNotFound (404): no message has the id; mapped to txmsg.ErrNotFound.
	CodeNotFound = "not_found"
	// CodeConflict (409): an illegal state transition or a reused id;
	// mapped to txmsg.ErrConflict.
	CodeConflict = "conflict"
	// CodeMethodNotAllowed (405): the path exists, the method does not.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeUnauthorized (401): no token, or not a valid one; mapped to
	// txmsg.ErrUnauthorized.
	CodeUnauthorized = "unauthorized"
	// CodeForbidden (403): the token may not do this (act as another
	// group, an operator's action) or a browser sent the request from
	// another origin; mapped to txmsg.ErrForbidden.
	CodeForbidden = "forbidden"
	// CodeUnsupportedMediaType (415): a request with a body that is not
	// Content-Type: application/json.
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeTooManyPrepared (429): the producer group has
	// broker.max_prepared_per_group prepared messages already; commit or
	// roll some back first.
	CodeTooManyPrepared = "too_many_prepared"
	// CodeOverloaded (503): the broker serves broker.max_concurrent_requests
	// requests already; retry shortly.
	CodeOverloaded = "overloaded"
	// CodeInternal (500): the broker failed; retry later.
	CodeInternal = "internal"
)

// APIError is an error the broker's HTTP API answered. errors.Is matches it
// against txmsg.ErrInvalidMessage, txmsg.ErrNotFound, txmsg.ErrConflict,
// txmsg.ErrUnauthorized or txmsg.ErrForbidden according to its Code.
type APIError struct {
	// Status is the HTTP status.
	Status int
	// Code is one of the Code constants (or a code a newer broker sent).
	Code string
	// Message is the broker's explanation.
	Message string
}

// Error implements error.
func (e *APIError) Error() string {
	return fmt.Sprintf("broker: %s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// Unwrap returns the txmsg sentinel that Code stands for, or nil.
func (e *APIError) Unwrap() error {
	switch e.Code {
	case CodeInvalidRequest, CodeTooLarge:
		return txmsg.ErrInvalidMessage
	case CodeNotFound:
		return txmsg.ErrNotFound
	case CodeConflict:
		return txmsg.ErrConflict
	case CodeUnauthorized:
		return txmsg.ErrUnauthorized
	case CodeForbidden:
		return txmsg.ErrForbidden
	}
	return nil
}

// ErrorBody is the JSON of every error answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is one error: of a whole answer (ErrorBody) or of one message
// of a batch (ItemResult).
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// PrepareBody is the JSON of POST /v1/half-messages. Key and value come as
// text or base64 (exactly one of each pair); a missing key shards by id.
type PrepareBody struct {
	ID            string            `json:"id,omitempty"`
	ProducerGroup string            `json:"producer_group"`
	Topic         string            `json:"topic"`
	Key           *string           `json:"key,omitempty"`
	KeyBase64     *string           `json:"key_base64,omitempty"`
	Value         *string           `json:"value,omitempty"`
	ValueBase64   *string           `json:"value_base64,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	CheckbackURL  string            `json:"checkback_url,omitempty"`
	CheckTimeout  string            `json:"check_timeout,omitempty"`
	MaxChecks     int               `json:"max_checks,omitempty"`
}

func bytesField(name string, text, b64 *string) ([]byte, error) {
	switch {
	case text != nil && b64 != nil:
		return nil, fmt.Errorf("%w: give %s or %s_base64, not both", txmsg.ErrInvalidMessage, name, name)
	case text != nil:
		return []byte(*text), nil
	case b64 != nil:
		b, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s_base64 is not valid base64: %v", txmsg.ErrInvalidMessage, name, err)
		}
		return b, nil
	}
	return nil, nil
}

func textOrBase64(b []byte) (text, b64 *string) {
	if b == nil {
		return nil, nil
	}
	s := string(b)
	if utf8.Valid(b) {
		return &s, nil
	}
	e := base64.StdEncoding.EncodeToString(b)
	return nil, &e
}

// request turns the body into a PrepareRequest.
func (b *PrepareBody) Request() (PrepareRequest, error) {
	key, err := bytesField("key", b.Key, b.KeyBase64)
	if err != nil {
		return PrepareRequest{}, err
	}
	value, err := bytesField("value", b.Value, b.ValueBase64)
	if err != nil {
		return PrepareRequest{}, err
	}
	if value == nil {
		return PrepareRequest{}, fmt.Errorf("%w: value or value_base64 is required", txmsg.ErrInvalidMessage)
	}
	req := PrepareRequest{
		ProducerGroup: b.ProducerGroup,
		Message:       txmsg.Message{ID: b.ID, Topic: b.Topic, Key: key, Value: value},
		CheckbackURL:  b.CheckbackURL,
		MaxChecks:     b.MaxChecks,
	}
	if b.MaxChecks < 0 {
		return PrepareRequest{}, fmt.Errorf("%w: max_checks %d: want at least 1", txmsg.ErrInvalidMessage, b.MaxChecks)
	}
	if b.CheckTimeout != "" {
		d, err := time.ParseDuration(b.CheckTimeout)
		if err != nil || d <= 0 {
			return PrepareRequest{}, fmt.Errorf("%w: check_timeout %q: want a positive duration such as \"6s\"", txmsg.ErrInvalidMessage, b.CheckTimeout)
		}
		req.CheckTimeout = d
	}
	keys := make([]string, 0, len(b.Headers))
	for k := range b.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		req.Message.Headers = append(req.Message.Headers, txmsg.Header{Key: k, Value: []byte(b.Headers[k])})
	}
	return req, nil
}

// checkWireHeaders rejects headers that the API's JSON object of strings
// would alter on the way: a name or value that is not UTF-8 text (JSON
// replaces the bytes) or a repeated name (an object keeps one value per
// name). The error wraps txmsg.ErrInvalidMessage and names the header.
func checkWireHeaders(hs []txmsg.Header) error {
	seen := make(map[string]bool, len(hs))
	for _, h := range hs {
		switch {
		case !utf8.ValidString(h.Key):
			return fmt.Errorf("%w: header name %q is not UTF-8 text, which the broker API carries as JSON strings", txmsg.ErrInvalidMessage, h.Key)
		case !utf8.Valid(h.Value):
			return fmt.Errorf("%w: header %q has a value that is not UTF-8 text, which the broker API carries as JSON strings", txmsg.ErrInvalidMessage, h.Key)
		case seen[h.Key]:
			return fmt.Errorf("%w: header %q appears more than once; the broker API carries one value per name", txmsg.ErrInvalidMessage, h.Key)
		}
		seen[h.Key] = true
	}
	return nil
}

// NewPrepareBody is the client's side of request; checkWireHeaders must accept
// req's headers first.
func NewPrepareBody(req PrepareRequest) PrepareBody {
	m := req.Message
	b := PrepareBody{ID: m.ID, ProducerGroup: req.ProducerGroup, Topic: m.Topic,
		CheckbackURL: req.CheckbackURL, MaxChecks: req.MaxChecks}
	b.Key, b.KeyBase64 = textOrBase64(m.Key)
	b.Value, b.ValueBase64 = textOrBase64(m.Value)
	if b.Value == nil && b.ValueBase64 == nil {
		empty := ""
		b.Value = &empty
	}
	if req.CheckTimeout > 0 {
		b.CheckTimeout = req.CheckTimeout.String()
	}
	if len(m.Headers) > 0 {
		b.Headers = make(map[string]string, len(m.Headers))
		for _, h := range m.Headers {
			b.Headers[h.Key] = string(h.Value)
		}
	}
	return b
}

// StateBody answers prepare, commit, rollback and resolve.
type StateBody struct {
	ID    string `json:"id"`
	State State  `json:"state"`
}

// ResolveBody is the JSON of POST /v1/half-messages/{id}/resolve.
type ResolveBody struct {
	Action string `json:"action"`
	Reason string `json:"reason,omitempty"`
}

// GroupBody is the JSON of PUT /v1/producer-groups/{group}; delivery_order
// is "prepare" (the default when left out) or "commit".
type GroupBody struct {
	CheckbackURL  string `json:"checkback_url"`
	DeliveryOrder *Order `json:"delivery_order,omitempty"`
}

// Group is a registered producer group: where the broker asks it about its
// messages and, in the one answer that issued them, its credentials.
type Group struct {
	// Name is the producer group.
	Name string `json:"group"`
	// CheckbackURL is where the broker asks about the group's messages.
	CheckbackURL string `json:"checkback_url"`
	// Order is the delivery order of the group's messages of one topic and
	// key (see Order).
	Order Order `json:"delivery_order,omitzero"`
	// Token authenticates the group at the broker API
	// (Authorization: Bearer); set only when it was just issued.
	Token string `json:"token,omitempty"`
	// Secret signs the check-backs the broker sends the group
	// (checkback.WithSecret); set only when it was just issued.
	Secret string `json:"secret,omitempty"`
	// UpdatedAt is when the group was last registered or changed; zero
	// (and left out) in the answer of GET /v1/producer-groups/{group}.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// GroupsBody answers GET /v1/producer-groups.
type GroupsBody struct {
	Groups []Group `json:"groups"`
}

// MessageBody is the JSON of one message in GET answers.
type MessageBody struct {
	ID              string     `json:"id"`
	State           State      `json:"state"`
	ProducerGroup   string     `json:"producer_group"`
	Topic           string     `json:"topic"`
	Key             *string    `json:"key,omitempty"`
	KeyBase64       *string    `json:"key_base64,omitempty"`
	CheckbackURL    string     `json:"checkback_url,omitempty"`
	CheckTimeout    string     `json:"check_timeout"`
	MaxChecks       int        `json:"max_checks"`
	CheckCount      int        `json:"check_count"`
	LastCheckResult string     `json:"last_check_result,omitempty"`
	LastCheckError  string     `json:"last_check_error,omitempty"`
	Reason          string     `json:"reason,omitempty"`
	Attempts        int        `json:"attempts,omitempty"`
	LastError       string     `json:"last_error,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	NextCheckAt     *time.Time `json:"next_check_at,omitempty"`
	LastCheckAt     *time.Time `json:"last_check_at,omitempty"`
	ResolvedAt      *time.Time `json:"resolved_at,omitempty"`
	DeliveredAt     *time.Time `json:"delivered_at,omitempty"`
	Seq             int64      `json:"seq"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func valTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

func NewMessageBody(i Info) MessageBody {
	m := MessageBody{ID: i.ID, State: i.State, ProducerGroup: i.ProducerGroup, Topic: i.Topic,
		CheckbackURL: i.CheckbackURL, CheckTimeout: i.CheckTimeout.String(), MaxChecks: i.MaxChecks,
		CheckCount: i.CheckCount, LastCheckResult: i.LastCheckResult, LastCheckError: i.LastCheckError,
		Reason: i.Reason, Attempts: i.Attempts, LastError: i.LastError, CreatedAt: i.CreatedAt,
		UpdatedAt: i.UpdatedAt, NextCheckAt: optTime(i.NextCheckAt), LastCheckAt: optTime(i.LastCheckAt),
		ResolvedAt: optTime(i.ResolvedAt), DeliveredAt: optTime(i.DeliveredAt), Seq: i.Seq}
	m.Key, m.KeyBase64 = textOrBase64(i.Key)
	return m
}

func (m MessageBody) Info() (Info, error) {
	key, err := bytesField("key", m.Key, m.KeyBase64)
	if err != nil {
		return Info{}, err
	}
	timeout, _ := time.ParseDuration(m.CheckTimeout)
	return Info{ID: m.ID, State: m.State, ProducerGroup: m.ProducerGroup, Topic: m.Topic, Key: key,
		CheckbackURL: m.CheckbackURL, CheckTimeout: timeout, MaxChecks: m.MaxChecks, CheckCount: m.CheckCount,
		LastCheckResult: m.LastCheckResult, LastCheckError: m.LastCheckError, Reason: m.Reason,
		Attempts: m.Attempts, LastError: m.LastError, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt,
		NextCheckAt: valTime(m.NextCheckAt), LastCheckAt: valTime(m.LastCheckAt),
		ResolvedAt: valTime(m.ResolvedAt), DeliveredAt: valTime(m.DeliveredAt), Seq: m.Seq}, nil
}

// ListBody answers GET /v1/half-messages.
type ListBody struct {
	Messages   []MessageBody `json:"messages"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// CheckBody is one entry of GET /v1/half-messages/{id}/checks.
type CheckBody struct {
	No        int       `json:"check_no"`
	Result    string    `json:"result"`
	Error     string    `json:"error,omitempty"`
	LatencyMS float64   `json:"latency_ms"`
	CheckedAt time.Time `json:"checked_at"`
}
