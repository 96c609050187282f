package checkback_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg/checkback"
)

// FuzzCheckbackHandler feeds arbitrary signed bodies to the producer-side
// decoder: it must answer 200 with a valid answer or 400, never panic.
func FuzzCheckbackHandler(f *testing.F) {
	for _, s := range []string{`{"id":"m","check_count":1}`, `{}`, `[`, `{"id":1}`, `{"id":"m","headers":{"a":"b"}}`} {
		f.Add(s)
	}
	const secret = "txcs_fuzz"
	h := checkback.Handler(checkback.CheckerFunc(func(context.Context, checkback.Request) (checkback.Answer, error) {
		return checkback.AnswerUnknown, nil
	}), checkback.WithSecret(secret))
	f.Fuzz(func(t *testing.T, body string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set(checkback.SignatureHeader, checkback.Sign(secret, time.Now(), []byte(body)))
		h.ServeHTTP(rec, req)
		if rec.Code != 200 && rec.Code != 400 {
			t.Fatalf("status %d", rec.Code)
		}
	})
}

// FuzzCheckbackAnswer parses arbitrary answer names: valid ones round-trip.
func FuzzCheckbackAnswer(f *testing.F) {
	for _, s := range []string{"commit", "rollback", "unknown", "", "COMMIT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var a checkback.Answer
		if err := a.UnmarshalText([]byte(s)); err != nil {
			return
		}
		b, err := a.MarshalText()
		if err != nil || string(b) != s {
			t.Fatalf("%q round-trips to %q, %v", s, b, err)
		}
	})
}
