package broker

import (
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

// Handler serves the broker's HTTP/JSON API on a Store:
//
//	POST /v1/half-messages                   prepare → 201 {"id","state"}
//	POST /v1/half-messages/{id}/commit       → 200 {"id","state"}
//	POST /v1/half-messages/{id}/rollback     → 200 {"id","state"}
//	POST /v1/half-messages/{id}/resolve      {"action":"commit"|"rollback","reason"} → 200
//	GET  /v1/half-messages/{id}              one message
//	GET  /v1/half-messages/{id}/checks       its check-back history
//	GET  /v1/half-messages?state=&producer_group=&limit=&cursor=
//	PUT  /v1/producer-groups/{group}         {"checkback_url","delivery_order"} → 200
//	GET  /v1/producer-groups/{group}         → 200 {"checkback_url","delivery_order"}
//
// Errors are {"error":{"code","message"}} with the Code constants: 400 for
// malformed bodies (unknown fields too) and invalid messages, 413 for bodies
// over the limit, 404 for unknown ids and paths, 405 for wrong methods, 409
// for illegal transitions. It is safe for concurrent use.
type Handler struct {
	store   *Store
	maxBody int64
	log     *slog.Logger
	mux     *http.ServeMux
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

// NewHandler returns the API handler on store.
func NewHandler(store *Store, opts ...HandlerOption) (*Handler, error) {
	if store == nil {
		return nil, errors.New("broker: handler: nil Store")
	}
	h := &Handler{store: store, maxBody: DefaultMaxBodyBytes, log: slog.New(slog.DiscardHandler), mux: http.NewServeMux()}
	for _, o := range opts {
		o(h)
	}
	if h.maxBody < 1024 {
		return nil, fmt.Errorf("broker: max body bytes %d: want at least 1024", h.maxBody)
	}
	h.mux.HandleFunc("POST /v1/half-messages", h.prepare)
	h.mux.HandleFunc("GET /v1/half-messages", h.list)
	h.mux.HandleFunc("GET /v1/half-messages/{id}", h.get)
	h.mux.HandleFunc("GET /v1/half-messages/{id}/checks", h.checks)
	h.mux.HandleFunc("POST /v1/half-messages/{id}/commit", h.commit)
	h.mux.HandleFunc("POST /v1/half-messages/{id}/rollback", h.rollback)
	h.mux.HandleFunc("POST /v1/half-messages/{id}/resolve", h.resolve)
	h.mux.HandleFunc("PUT /v1/producer-groups/{group}", h.putGroup)
	h.mux.HandleFunc("GET /v1/producer-groups/{group}", h.getGroup)
	return h, nil
}

// ServeHTTP implements http.Handler. Requests no route matches get JSON
// errors too: 404 not_found or 405 method_not_allowed (with Allow).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := h.mux.Handler(r); pattern != "" {
		h.mux.ServeHTTP(w, r)
		return
	}
	// Let the mux decide between 404 and 405, then answer in JSON.
	rec := &statusRecorder{header: http.Header{}}
	h.mux.ServeHTTP(rec, r)
	var b halfmsg.ErrorBody
	b.Error.Code, b.Error.Message = halfmsg.CodeNotFound, "no such endpoint: "+r.URL.Path
	if rec.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.header.Get("Allow"))
		b.Error.Code, b.Error.Message = halfmsg.CodeMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path
	} else {
		rec.status = http.StatusNotFound
	}
	h.writeJSON(w, rec.status, b)
}

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
	var b halfmsg.ErrorBody
	b.Error.Code, b.Error.Message = ae.Code, ae.Message
	h.writeJSON(w, ae.Status, b)
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
	id, err := h.store.Prepare(r.Context(), req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusCreated, halfmsg.StateBody{ID: id, State: halfmsg.StatePrepared})
}

func (h *Handler) commit(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, err := h.store.Commit(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.StateBody{ID: id, State: st})
}

func (h *Handler) rollback(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st, err := h.store.Rollback(r.Context(), id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.StateBody{ID: id, State: st})
}

func (h *Handler) resolve(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var b halfmsg.ResolveBody
	if err := h.decode(w, r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if b.Action != "commit" && b.Action != "rollback" {
		h.fail(w, r, fmt.Errorf("%w: action %q: want commit or rollback", txmsg.ErrInvalidMessage, b.Action))
		return
	}
	st, err := h.store.Resolve(r.Context(), id, b.Action == "commit", b.Reason)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.StateBody{ID: id, State: st})
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	info, err := h.store.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.NewMessageBody(info))
}

func (h *Handler) checks(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := h.store.Get(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
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

func (h *Handler) putGroup(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	var b halfmsg.GroupBody
	if err := h.decode(w, r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	order := halfmsg.OrderPrepare
	if b.DeliveryOrder != nil {
		order = *b.DeliveryOrder
	}
	if err := h.store.SetGroup(r.Context(), group, b.CheckbackURL, halfmsg.WithDeliveryOrder(order)); err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.GroupAnswer{ProducerGroup: group, CheckbackURL: b.CheckbackURL, DeliveryOrder: order})
}

func (h *Handler) getGroup(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	g, err := h.store.Group(r.Context(), group)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.GroupAnswer{ProducerGroup: group, CheckbackURL: g.CheckbackURL, DeliveryOrder: g.Order})
}

// apiErrorFor maps a store error to the API's status and code.
func apiErrorFor(err error) *halfmsg.APIError {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &halfmsg.APIError{Status: http.StatusRequestEntityTooLarge, Code: halfmsg.CodeTooLarge,
			Message: fmt.Sprintf("request body is over the limit of %d bytes", mbe.Limit)}
	case errors.Is(err, txmsg.ErrInvalidMessage):
		return &halfmsg.APIError{Status: http.StatusBadRequest, Code: halfmsg.CodeInvalidRequest, Message: err.Error()}
	case errors.Is(err, txmsg.ErrNotFound):
		return &halfmsg.APIError{Status: http.StatusNotFound, Code: halfmsg.CodeNotFound, Message: err.Error()}
	case errors.Is(err, txmsg.ErrConflict):
		return &halfmsg.APIError{Status: http.StatusConflict, Code: halfmsg.CodeConflict, Message: err.Error()}
	}
	return &halfmsg.APIError{Status: http.StatusInternalServerError, Code: halfmsg.CodeInternal, Message: "internal error; see the broker's log"}
}
