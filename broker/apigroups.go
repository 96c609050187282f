package broker

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

func (h *Handler) putGroup(w http.ResponseWriter, r *http.Request) {
	a := actorOf(r)
	if !a.isOperator() {
		h.fail(w, r, errForbidden("cannot register or change groups; the operator does"))
		return
	}
	rotate := false
	if s := r.URL.Query().Get("rotate"); s != "" {
		var err error
		if rotate, err = strconv.ParseBool(s); err != nil {
			h.fail(w, r, fmt.Errorf("%w: rotate %q: want true or false", txmsg.ErrInvalidMessage, s))
			return
		}
	}
	var b halfmsg.GroupBody
	if err := h.decode(w, r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	var opts []halfmsg.GroupOption
	if b.DeliveryOrder != nil {
		opts = append(opts, halfmsg.WithDeliveryOrder(*b.DeliveryOrder))
	}
	g, err := h.store.PutGroup(r.Context(), a, r.PathValue("group"), b.CheckbackURL, rotate, opts...)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// The answer may hold the group's credentials: no cache keeps it.
	w.Header().Set("Cache-Control", "no-store")
	h.writeJSON(w, http.StatusOK, g)
}

func (h *Handler) getGroup(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if a := actorOf(r); !a.isOperator() && a.Group != group {
		h.fail(w, r, errForbidden("reads only its own group's registration"))
		return
	}
	g, err := h.store.Group(r.Context(), group)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, g)
}

func (h *Handler) listGroups(w http.ResponseWriter, r *http.Request) {
	if !actorOf(r).isOperator() {
		h.fail(w, r, errForbidden("cannot list groups; the operator does"))
		return
	}
	gs, err := h.store.Groups(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeJSON(w, http.StatusOK, halfmsg.GroupsBody{Groups: append([]halfmsg.Group{}, gs...)})
}

func (h *Handler) deleteGroup(w http.ResponseWriter, r *http.Request) {
	a := actorOf(r)
	if !a.isOperator() {
		h.fail(w, r, errForbidden("cannot delete groups; the operator does"))
		return
	}
	if err := h.store.DeleteGroup(r.Context(), a, r.PathValue("group")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
