package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

// The batch endpoints answer many messages in one request: a client that
// coalesces its concurrent calls pays the HTTP, JSON and authentication work
// of one call for them all, and the messages go into the group-commit queues
// together, so that they share one database round as concurrent calls do.

// decodeBatch decodes a batch request's body into v and checks its length n
// (what n reports once decoded).
func (h *Handler) decodeBatch(w http.ResponseWriter, r *http.Request, v any, n func() int) error {
	if err := h.decode(w, r, v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: batch request body is over the limit of %d bytes (broker.max_body_bytes): send fewer messages per request",
				errTooLarge, mbe.Limit)
		}
		return err
	}
	switch k := n(); {
	case k == 0:
		return fmt.Errorf("%w: \"messages\" is empty: want 1 to %d messages", txmsg.ErrInvalidMessage, halfmsg.MaxBatchItems)
	case k > halfmsg.MaxBatchItems:
		return fmt.Errorf("%w: %d messages in one request: want at most %d (halfmsg.MaxBatchItems)",
			txmsg.ErrInvalidMessage, k, halfmsg.MaxBatchItems)
	}
	return nil
}

// itemError is the result of a batch's message that failed with err; a 500
// is logged, as fail does for a whole request.
func (h *Handler) itemError(r *http.Request, id string, err error) halfmsg.ItemResult {
	ae := apiErrorFor(err)
	if ae.Status == http.StatusInternalServerError {
		h.log.ErrorContext(r.Context(), "broker: api batch item failed", slog.String("path", r.URL.Path),
			slog.String("msg_id", id), slog.Any("error", err))
	}
	return halfmsg.ItemResult{ID: id, Status: ae.Status, Error: &halfmsg.ErrorDetail{Code: ae.Code, Message: ae.Message}}
}

// prepareBatch serves POST /v1/half-messages:prepare-batch: each message is
// prepared, or refused, as POST /v1/half-messages would.
func (h *Handler) prepareBatch(w http.ResponseWriter, r *http.Request) {
	var b halfmsg.PrepareBatchBody
	if err := h.decodeBatch(w, r, &b, func() int { return len(b.Messages) }); err != nil {
		h.fail(w, r, err)
		return
	}
	a := actorOf(r)
	out := halfmsg.BatchBody{Results: make([]halfmsg.ItemResult, len(b.Messages))}
	var (
		reqs []halfmsg.PrepareRequest
		at   []int
	)
	for i := range b.Messages {
		req, err := b.Messages[i].Request()
		if err == nil && !a.isOperator() && req.ProducerGroup != a.Group {
			err = errForbidden("prepares only its own group's messages")
		}
		if err != nil {
			out.Results[i] = h.itemError(r, b.Messages[i].ID, err)
			continue
		}
		reqs, at = append(reqs, req), append(at, i)
	}
	ids, errs := h.store.prepareMany(r.Context(), reqs, prepareRules{limit: h.maxPrepared})
	for k, i := range at {
		if errs[k] != nil {
			out.Results[i] = h.itemError(r, reqs[k].Message.ID, errs[k])
			continue
		}
		out.Results[i] = halfmsg.ItemResult{ID: ids[k], State: halfmsg.StatePrepared, Status: http.StatusCreated}
	}
	h.writeJSON(w, http.StatusOK, out)
}

// endBatch serves POST /v1/half-messages:end-batch: each message is
// committed or rolled back as .../{id}/commit or .../{id}/rollback would.
func (h *Handler) endBatch(w http.ResponseWriter, r *http.Request) {
	var b halfmsg.EndBatchBody
	if err := h.decodeBatch(w, r, &b, func() int { return len(b.Messages) }); err != nil {
		h.fail(w, r, err)
		return
	}
	out := halfmsg.BatchBody{Results: make([]halfmsg.ItemResult, len(b.Messages))}
	var (
		ids    []string
		commit []bool
		at     []int
	)
	for i, m := range b.Messages {
		switch {
		case m.ID == "":
			out.Results[i] = h.itemError(r, "", fmt.Errorf("%w: id is required", txmsg.ErrInvalidMessage))
		case m.Action != halfmsg.ActionCommit && m.Action != halfmsg.ActionRollback:
			out.Results[i] = h.itemError(r, m.ID, fmt.Errorf("%w: action %q: want commit or rollback", txmsg.ErrInvalidMessage, m.Action))
		default:
			ids, commit, at = append(ids, m.ID), append(commit, m.Action == halfmsg.ActionCommit), append(at, i)
		}
	}
	sts, errs := h.store.endMany(r.Context(), actorOf(r), ids, commit)
	for k, i := range at {
		if errs[k] != nil {
			out.Results[i] = h.itemError(r, ids[k], errs[k])
			continue
		}
		out.Results[i] = halfmsg.ItemResult{ID: ids[k], State: sts[k], Status: http.StatusOK}
	}
	h.writeJSON(w, http.StatusOK, out)
}
