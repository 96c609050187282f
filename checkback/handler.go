package checkback

import (
	"encoding/json"
	"log/slog"
	"net/http"
)

// maxRequestBytes bounds a check-back request body.
const maxRequestBytes = 1 << 20

// HandlerOption configures Handler.
type HandlerOption func(*handler)

// WithHandlerLogger logs checks that failed (default: discarded).
func WithHandlerLogger(l *slog.Logger) HandlerOption {
	return func(h *handler) {
		if l != nil {
			h.log = l
		}
	}
}

type handler struct {
	checker Checker
	log     *slog.Logger
}

// Handler returns the http.Handler a producer mounts at its check-back URL.
// It accepts POST with a JSON Request, asks checker with the request's
// context (canceled when the broker gives up), and answers 200 with
// {"state":…}. A checker error answers 200 {"state":"unknown"} and is logged;
// a malformed request answers 400. It is safe for concurrent use.
func Handler(checker Checker, opts ...HandlerOption) http.Handler {
	h := &handler{checker: checker, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(h)
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "checkback: POST only", http.StatusMethodNotAllowed)
		return
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	var req Request
	if err := dec.Decode(&req); err != nil || req.ID == "" {
		http.Error(w, "checkback: want a JSON body with an id", http.StatusBadRequest)
		return
	}
	a, err := h.checker.Check(r.Context(), req)
	if err != nil || a < AnswerUnknown || a > AnswerRollback {
		h.log.WarnContext(r.Context(), "checkback: check failed, answering unknown",
			slog.String("msg_id", req.ID), slog.Any("error", err))
		a = AnswerUnknown
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answerBody{State: a})
}
