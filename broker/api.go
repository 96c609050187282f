package broker

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

// DefaultMaxBodyBytes limits an API request body: a 1 MiB value in base64
// plus room for the rest.
const DefaultMaxBodyBytes = 2 << 20

// Defaults of the API's resource bounds.
const (
	// DefaultMaxConcurrentRequests is how many requests the API serves at
	// once; more are answered 503 at once. Each holds at most one database
	// connection at a time, so past the pool's size (32) more only queue.
	DefaultMaxConcurrentRequests = 256
	// DefaultMaxPreparedPerGroup is how many prepared messages one producer
	// group may have; another prepare is answered 429.
	DefaultMaxPreparedPerGroup = 100000
)

// Handler serves the broker's HTTP/JSON API on a Store:
//
//	POST   /v1/half-messages                   prepare → 201 {"id","state"}
//	POST   /v1/half-messages/{id}/commit       → 200 {"id","state"}
//	POST   /v1/half-messages/{id}/rollback     → 200 {"id","state"}
//	POST   /v1/half-messages:prepare-batch     {"messages":[prepare bodies]} → 200 {"results":[{"id","state","status","error"}]}
//	POST   /v1/half-messages:end-batch         {"messages":[{"id","action":"commit"|"rollback"}]} → 200 {"results":[…]}
//	POST   /v1/half-messages/{id}/resolve      {"action":"commit"|"rollback","reason"} → 200 (operator)
//	GET    /v1/half-messages/{id}              one message
//	GET    /v1/half-messages/{id}/checks       its check-back history
//	GET    /v1/half-messages?state=&producer_group=&limit=&cursor=
//	PUT    /v1/producer-groups/{group}[?rotate=true]  {"checkback_url","delivery_order"} → 200 {"group","checkback_url","delivery_order"[,"token","secret"]} (operator)
//	GET    /v1/producer-groups/{group}         → 200 {"group","checkback_url","delivery_order"}
//	GET    /v1/producer-groups                 → 200 {"groups":[…]} (operator)
//	DELETE /v1/producer-groups/{group}         → 204 (operator)
//
// Every request carries Authorization: Bearer with the operator's token,
// which may do everything, or a producer group's token, which may prepare,
// commit, roll back and read its own group's messages and its own
// registration, and nothing else (403 forbidden). No token or a wrong one
// answers 401 unauthorized. A request with a body must be Content-Type
// application/json (415), and a browser's request from another origin that
// could change something is refused (403), so no web page can drive the
// API. Past WithMaxConcurrentRequests requests in flight the API answers 503
// overloaded, and a group at WithMaxPreparedPerGroup prepared messages gets
// 429 too_many_prepared.
//
// Errors are {"error":{"code","message"}} with the Code constants: 400 for
// malformed bodies (unknown fields too) and invalid messages, 413 for bodies
// over the limit, 404 for unknown ids and paths, 405 for wrong methods, 409
// for illegal transitions. A batch request (at most halfmsg.MaxBatchItems
// messages) that is itself valid answers 200 with one result per message,
// in order, each with the status and error code its single call would have
// answered; a group's token acts on its own group's messages only, item by
// item. It is safe for concurrent use.
type Handler struct {
	store        *Store
	maxBody      int64
	log          *slog.Logger
	mux          *http.ServeMux
	opToken      *string
	operator     []byte // SHA-256 of the operator token
	authDisabled bool
	maxRequests  int
	slots        chan struct{}
	maxPrepared  int
	crossOrigin  *http.CrossOriginProtection
}

// HandlerOption configures a Handler.
type HandlerOption func(*Handler)

// WithMaxBodyBytes limits request bodies (default 2 MiB).
func WithMaxBodyBytes(n int64) HandlerOption { return func(h *Handler) { h.maxBody = n } }

// WithHandlerLogger logs internal errors (default: discarded).
func WithHandlerLogger(l *slog.Logger) HandlerOption {
	return func(h *Handler) {
		if l != nil {
			h.log = l
		}
	}
}

// WithOperatorToken sets the operator's token, which may do everything (at
// least MinOperatorTokenLen characters). NewHandler needs it, or
// WithAuthDisabled.
func WithOperatorToken(token string) HandlerOption { return func(h *Handler) { h.opToken = &token } }

// WithAuthDisabled turns authentication off: anyone who reaches the API
// acts as the operator. For development and tests only.
func WithAuthDisabled() HandlerOption { return func(h *Handler) { h.authDisabled = true } }

// WithMaxConcurrentRequests bounds the requests served at once (default
// DefaultMaxConcurrentRequests); more are answered 503 overloaded.
func WithMaxConcurrentRequests(n int) HandlerOption { return func(h *Handler) { h.maxRequests = n } }

// WithMaxPreparedPerGroup bounds one group's prepared messages (default
// DefaultMaxPreparedPerGroup); a prepare past it is answered 429.
func WithMaxPreparedPerGroup(n int) HandlerOption { return func(h *Handler) { h.maxPrepared = n } }

// NewHandler returns the API handler on store. It needs WithOperatorToken or
// WithAuthDisabled.
func NewHandler(store *Store, opts ...HandlerOption) (*Handler, error) {
	if store == nil {
		return nil, errors.New("broker: handler: nil Store")
	}
	h := &Handler{store: store, maxBody: DefaultMaxBodyBytes, log: slog.New(slog.DiscardHandler), mux: http.NewServeMux(),
		maxRequests: DefaultMaxConcurrentRequests, maxPrepared: DefaultMaxPreparedPerGroup,
		crossOrigin: http.NewCrossOriginProtection()}
	for _, o := range opts {
		o(h)
	}
	switch {
	case h.maxBody < 1024:
		return nil, fmt.Errorf("broker: max body bytes %d: want at least 1024", h.maxBody)
	case h.maxRequests < 1:
		return nil, fmt.Errorf("broker: max concurrent requests %d: want at least 1", h.maxRequests)
	case h.maxPrepared < 1:
		return nil, fmt.Errorf("broker: max prepared per group %d: want at least 1", h.maxPrepared)
	case h.opToken == nil && !h.authDisabled:
		return nil, errors.New("broker: handler: no operator token (WithOperatorToken), and authentication is not disabled")
	case h.opToken != nil && h.authDisabled:
		return nil, errors.New("broker: handler: an operator token and authentication disabled: choose one")
	}
	if h.opToken != nil {
		if err := checkOperatorToken(*h.opToken); err != nil {
			return nil, err
		}
		sum := sha256.Sum256([]byte(*h.opToken))
		h.operator, h.opToken = sum[:], nil
	}
	h.slots = make(chan struct{}, h.maxRequests)
	h.mux.HandleFunc("POST /v1/half-messages", h.prepare)
	h.mux.HandleFunc("POST /v1/half-messages:prepare-batch", h.prepareBatch)
	h.mux.HandleFunc("POST /v1/half-messages:end-batch", h.endBatch)
	h.mux.HandleFunc("GET /v1/half-messages", h.list)
	h.mux.HandleFunc("GET /v1/half-messages/{id}", h.get)
	h.mux.HandleFunc("GET /v1/half-messages/{id}/checks", h.checks)
	h.mux.HandleFunc("POST /v1/half-messages/{id}/commit", h.commit)
	h.mux.HandleFunc("POST /v1/half-messages/{id}/rollback", h.rollback)
	h.mux.HandleFunc("POST /v1/half-messages/{id}/resolve", h.resolve)
	h.mux.HandleFunc("PUT /v1/producer-groups/{group}", h.putGroup)
	h.mux.HandleFunc("GET /v1/producer-groups/{group}", h.getGroup)
	h.mux.HandleFunc("GET /v1/producer-groups", h.listGroups)
	h.mux.HandleFunc("DELETE /v1/producer-groups/{group}", h.deleteGroup)
	return h, nil
}

// ServeHTTP implements http.Handler. In order: the concurrency bound (503),
// cross-origin browser requests (403), the body's media type (415), the
// token (401); then the route. Requests no route matches get JSON errors
// too: 404 not_found or 405 method_not_allowed (with Allow).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		w.Header().Set("Retry-After", "1")
		h.answerError(w, http.StatusServiceUnavailable, halfmsg.CodeOverloaded,
			fmt.Sprintf("the broker serves %d requests already (broker.max_concurrent_requests); retry shortly", h.maxRequests))
		return
	}
	if err := h.crossOrigin.Check(r); err != nil {
		h.answerError(w, http.StatusForbidden, halfmsg.CodeForbidden, "cross-origin request from a browser refused")
		return
	}
	if r.ContentLength != 0 && !isJSON(r.Header.Get("Content-Type")) {
		h.answerError(w, http.StatusUnsupportedMediaType, halfmsg.CodeUnsupportedMediaType,
			"a request with a body must be Content-Type: application/json")
		return
	}
	a, err := h.authenticate(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), actorKey{}, a))
	if _, pattern := h.mux.Handler(r); pattern != "" {
		h.mux.ServeHTTP(w, r)
		return
	}
	// Let the mux decide between 404 and 405, then answer in JSON.
	rec := &statusRecorder{header: http.Header{}}
	h.mux.ServeHTTP(rec, r)
	code, msg := halfmsg.CodeNotFound, "no such endpoint: "+r.URL.Path
	if rec.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.header.Get("Allow"))
		code, msg = halfmsg.CodeMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path
	} else {
		rec.status = http.StatusNotFound
	}
	h.answerError(w, rec.status, code, msg)
}

// errTooManyPrepared: the group is at broker.max_prepared_per_group.
var errTooManyPrepared = errors.New("broker: too many prepared messages")

// errTooLarge: a request body is over broker.max_body_bytes.
var errTooLarge = errors.New("broker: request too large")

// statusRecorder keeps the status and headers the mux's own 404/405
// handlers write, and drops their plain-text body.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }

func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }

func (s *statusRecorder) WriteHeader(code int) { s.status = code }

func (h *Handler) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	ae := apiErrorFor(err)
	if ae.Status == http.StatusInternalServerError {
		h.log.ErrorContext(r.Context(), "broker: api request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("error", err))
	}
	if ae.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="txmsg"`)
	}
	h.answerError(w, ae.Status, ae.Code, ae.Message)
}

func (h *Handler) answerError(w http.ResponseWriter, status int, code, message string) {
	var b halfmsg.ErrorBody
	b.Error.Code, b.Error.Message = code, message
	h.writeJSON(w, status, b)
}

// decode reads one JSON value into v, refusing unknown fields, trailing
// data and bodies over the limit.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: empty body: want a JSON object", txmsg.ErrInvalidMessage)
		}
		return fmt.Errorf("%w: bad JSON body: %v", txmsg.ErrInvalidMessage, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: bad JSON body: data after the object", txmsg.ErrInvalidMessage)
	}
	return nil
}

func (h *Handler) prepare(w http.ResponseWriter, r *http.Request) {
	var b halfmsg.PrepareBody
	if err := h.decode(w, r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	req, err := b.Request()
	if err != nil {
		h.fail(w, r, err)
		return
	}
	a := actorOf(r)
	if !a.isOperator() && req.ProducerGroup != a.Group {
		h.fail(w, r, errForbidden("prepares only its own group's messages"))
		return
	}
	id, err := h.store.prepare(r.Context(), req, prepareRules{limit: h.maxPrepared})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusCreated, halfmsg.StateBody{ID: id, State: halfmsg.StatePrepared})
}

func (h *Handler) commit(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, err := h.store.CommitAs(r.Context(), actorOf(r), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.StateBody{ID: id, State: st})
}

func (h *Handler) rollback(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, err := h.store.RollbackAs(r.Context(), actorOf(r), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.StateBody{ID: id, State: st})
}

func (h *Handler) resolve(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a := actorOf(r)
	if !a.isOperator() {
		h.fail(w, r, errForbidden("cannot resolve messages; the operator does"))
		return
	}
	var b halfmsg.ResolveBody
	if err := h.decode(w, r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if b.Action != "commit" && b.Action != "rollback" {
		h.fail(w, r, fmt.Errorf("%w: action %q: want commit or rollback", txmsg.ErrInvalidMessage, b.Action))
		return
	}
	st, err := h.store.ResolveAs(r.Context(), a, id, b.Action == "commit", b.Reason)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.StateBody{ID: id, State: st})
}

// getOwn returns message id if the request's actor may read it: a group
// finds only its own messages (another group's is not found, as an unknown
// id).
func (h *Handler) getOwn(r *http.Request, id string) (halfmsg.Info, error) {
	if a := actorOf(r); !a.isOperator() {
		return h.store.getIn(r.Context(), id, a.Group)
	}
	return h.store.Get(r.Context(), id)
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	info, err := h.getOwn(r, r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.NewMessageBody(info))
}

func (h *Handler) checks(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := h.getOwn(r, id); err != nil {
		h.fail(w, r, err)
		return
	}
	// The history is kept by id: a group reads it only when no other group
	// has a message of that id, else it could read the other's answers.
	if a := actorOf(r); !a.isOperator() {
		if shared, err := h.store.sharedID(r.Context(), id, a.Group); err != nil || shared {
			if err == nil {
				err = fmt.Errorf("%w: id %s is also used by another producer group: the operator reads its checks", txmsg.ErrConflict, id)
			}
			h.fail(w, r, err)
			return
		}
	}
	cs, err := h.store.Checks(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]halfmsg.CheckBody, len(cs))
	for i, c := range cs {
		out[i] = halfmsg.CheckBody{No: c.No, Result: c.Result, Error: c.Error,
			LatencyMS: float64(c.Latency.Microseconds()) / 1000, CheckedAt: c.CheckedAt}
	}
	h.writeJSON(w, http.StatusOK, map[string][]halfmsg.CheckBody{"checks": out})
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f halfmsg.Filter
	if s := q.Get("state"); s != "" {
		st, err := halfmsg.ParseState(s)
		if err != nil {
			h.fail(w, r, fmt.Errorf("%w: %v", txmsg.ErrInvalidMessage, err))
			return
		}
		f.State = st
	}
	f.ProducerGroup = q.Get("producer_group")
	if a := actorOf(r); !a.isOperator() {
		if f.ProducerGroup != "" && f.ProducerGroup != a.Group {
			h.fail(w, r, errForbidden("lists only its own group's messages"))
			return
		}
		f.ProducerGroup = a.Group
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > halfmsg.MaxListLimit {
			h.fail(w, r, fmt.Errorf("%w: limit %q: want 1 to %d", txmsg.ErrInvalidMessage, s, halfmsg.MaxListLimit))
			return
		}
		f.Limit = n
	}
	if s := q.Get("cursor"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			h.fail(w, r, fmt.Errorf("%w: cursor %q: want the next_cursor of an earlier page", txmsg.ErrInvalidMessage, s))
			return
		}
		f.After = n
	}
	infos, next, err := h.store.List(r.Context(), f)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := halfmsg.ListBody{Messages: make([]halfmsg.MessageBody, len(infos))}
	for i, info := range infos {
		out.Messages[i] = halfmsg.NewMessageBody(info)
	}
	if next > 0 {
		out.NextCursor = strconv.FormatInt(next, 10)
	}
	h.writeJSON(w, http.StatusOK, out)
}

// apiErrorFor maps a store error to the API's status and code.
func apiErrorFor(err error) *halfmsg.APIError {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &halfmsg.APIError{Status: http.StatusRequestEntityTooLarge, Code: halfmsg.CodeTooLarge,
			Message: fmt.Sprintf("request body is over the limit of %d bytes", mbe.Limit)}
	case errors.Is(err, errTooLarge):
		return &halfmsg.APIError{Status: http.StatusRequestEntityTooLarge, Code: halfmsg.CodeTooLarge, Message: err.Error()}
	case errors.Is(err, txmsg.ErrInvalidMessage):
		return &halfmsg.APIError{Status: http.StatusBadRequest, Code: halfmsg.CodeInvalidRequest, Message: err.Error()}
	case errors.Is(err, txmsg.ErrNotFound):
		return &halfmsg.APIError{Status: http.StatusNotFound, Code: halfmsg.CodeNotFound, Message: err.Error()}
	case errors.Is(err, txmsg.ErrConflict):
		return &halfmsg.APIError{Status: http.StatusConflict, Code: halfmsg.CodeConflict, Message: err.Error()}
	case errors.Is(err, txmsg.ErrUnauthorized):
		return &halfmsg.APIError{Status: http.StatusUnauthorized, Code: halfmsg.CodeUnauthorized, Message: err.Error()}
	case errors.Is(err, txmsg.ErrForbidden):
		return &halfmsg.APIError{Status: http.StatusForbidden, Code: halfmsg.CodeForbidden, Message: err.Error()}
	case errors.Is(err, errTooManyPrepared):
		return &halfmsg.APIError{Status: http.StatusTooManyRequests, Code: halfmsg.CodeTooManyPrepared, Message: err.Error()}
	case errors.Is(err, errClosed):
		// Nothing was done: the client may try again, on another broker.
		return &halfmsg.APIError{Status: http.StatusServiceUnavailable, Code: halfmsg.CodeOverloaded, Message: err.Error()}
	}
	return &halfmsg.APIError{Status: http.StatusInternalServerError, Code: halfmsg.CodeInternal, Message: "internal error; see the broker's log"}
}
