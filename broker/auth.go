package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/txmsg/txmsg"
)

// Actor is who asks the Store for a change: the operator, or a producer
// group through its token. Every change is logged with it (the audit log),
// and a group may change only its own messages. The zero Actor is the
// operator: whoever calls the Store in-process has its database, and so the
// operator's power.
type Actor struct {
	// Group, when set, is the producer group acting through its token.
	Group string
	// Name is how the audit log names an operator (default "operator").
	Name string
}

// String returns "group <name>" for a group, else the operator's name.
func (a Actor) String() string {
	switch {
	case a.Group != "":
		return "group " + a.Group
	case a.Name != "":
		return a.Name
	}
	return "operator"
}

// isOperator reports whether a may do everything.
func (a Actor) isOperator() bool { return a.Group == "" }

// Prefixes of issued credentials, so that they are recognised in a leak
// (secret scanners) and never confused with each other.
const (
	groupTokenPrefix = "txgt_"
	secretPrefix     = "txcs_"
)

// newCredential returns prefix followed by 256 random bits in hex.
func newCredential(prefix string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("broker: generate credential: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// tokenHash is what the store keeps of a token: its hex SHA-256. A token
// holds 256 random bits, so a fast hash is as good as a slow one.
func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// maxTokenLen bounds a bearer token, so that a huge header is not hashed.
const maxTokenLen = 512

// parseBearer returns the token of an Authorization header value of the
// form "Bearer <token68>" (RFC 6750; the scheme is case-insensitive, one or
// more spaces follow it). Anything else is not ok.
func parseBearer(h string) (string, bool) {
	const scheme = "bearer"
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) || h[len(scheme)] != ' ' {
		return "", false
	}
	tok := strings.TrimLeft(h[len(scheme):], " ")
	if tok == "" || len(tok) > maxTokenLen {
		return "", false
	}
	// token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
	body := strings.TrimRight(tok, "=")
	if body == "" {
		return "", false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') &&
			c != '-' && c != '.' && c != '_' && c != '~' && c != '+' && c != '/' {
			return "", false
		}
	}
	return tok, true
}

// MinOperatorTokenLen is the shortest operator token accepted.
const MinOperatorTokenLen = 16

// checkOperatorToken refuses tokens too short to resist guessing and tokens
// a bearer header cannot carry. The error does not repeat the token.
func checkOperatorToken(tok string) error {
	if len(tok) < MinOperatorTokenLen {
		return fmt.Errorf("broker: broker.auth.operator_token: %d characters: want at least %d random ones (openssl rand -hex 32)",
			len(tok), MinOperatorTokenLen)
	}
	if got, ok := parseBearer("Bearer " + tok); !ok || got != tok {
		return fmt.Errorf("broker: broker.auth.operator_token: want letters, digits and - . _ ~ + / only (openssl rand -hex 32)")
	}
	return nil
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// actorKey is the request context key of the authenticated Actor.
type actorKey struct{}

// actorOf returns the Actor that ServeHTTP authenticated.
func actorOf(r *http.Request) Actor {
	a, _ := r.Context().Value(actorKey{}).(Actor)
	return a
}

// authenticate returns who sent r, or an error wrapping
// txmsg.ErrUnauthorized. The token appears in no error.
func (h *Handler) authenticate(r *http.Request) (Actor, error) {
	if h.authDisabled {
		return Actor{Name: "anonymous (broker.auth.disabled)"}, nil
	}
	hs := r.Header.Values("Authorization")
	if len(hs) != 1 {
		return Actor{}, fmt.Errorf("%w: send one Authorization: Bearer <token> header", txmsg.ErrUnauthorized)
	}
	tok, ok := parseBearer(hs[0])
	if !ok {
		return Actor{}, fmt.Errorf("%w: want Authorization: Bearer <token>", txmsg.ErrUnauthorized)
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], h.operator) == 1 {
		return Actor{}, nil
	}
	if !strings.HasPrefix(tok, groupTokenPrefix) {
		// Not a token the broker issued: no need to ask the database.
		return Actor{}, fmt.Errorf("%w: invalid token", txmsg.ErrUnauthorized)
	}
	g, err := h.store.groupByToken(r.Context(), tok)
	if err != nil {
		if errors.Is(err, txmsg.ErrUnauthorized) {
			return Actor{}, fmt.Errorf("%w: invalid token", txmsg.ErrUnauthorized)
		}
		return Actor{}, err
	}
	return Actor{Group: g}, nil
}

// errForbidden says what a group's token may not do.
func errForbidden(what string) error {
	return fmt.Errorf("%w: a producer group's token %s", txmsg.ErrForbidden, what)
}
