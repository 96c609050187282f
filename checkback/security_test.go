package checkback_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
)

const testSecret = "txcs_0123456789abcdef"

// serve sends body to h with the signature header sig ("" sends none) and
// returns the status.
func serve(t *testing.T, h http.Handler, body, sig string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/check", strings.NewReader(body))
	if sig != "" {
		req.Header.Set(checkback.SignatureHeader, sig)
	}
	h.ServeHTTP(rec, req)
	return rec.Code
}

// ledgerRows counts the ledger rows of id.
func ledgerRows(t *testing.T, db *testenv.Database, id string) int {
	t.Helper()
	var n int
	if err := db.DB.QueryRow(`SELECT COUNT(*) FROM txmsg_checkback_ledger WHERE msg_id = ?`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSecurityUnsignedCheckback: a check-back that the group's secret did
// not sign is refused with 401 and records nothing, so nobody can make the
// ledger roll back a transaction about to start; so is every request to a
// handler without a secret.
func TestSecurityUnsignedCheckback(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ledger, err := checkback.LedgerChecker(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	h := checkback.Handler(ledger, checkback.WithSecret(testSecret))
	body := `{"id":"victim","producer_group":"shop","topic":"t","check_count":1}`
	for name, sig := range map[string]string{
		"unsigned":        "",
		"other secret":    checkback.Sign("txcs_attacker", time.Now(), []byte(body)),
		"other body":      checkback.Sign(testSecret, time.Now(), []byte(`{"id":"other"}`)),
		"malformed":       "t=1,v1=zz",
		"no time":         "v1=" + strings.Repeat("0", 64),
		"signature only":  strings.TrimPrefix(checkback.Sign(testSecret, time.Now(), []byte(body)), "t="),
		"two times":       checkback.Sign(testSecret, time.Now(), []byte(body)) + ",t=1",
		"truncated mac":   checkback.Sign(testSecret, time.Now(), []byte(body))[:40],
		"empty secret":    checkback.Sign("", time.Now(), []byte(body)),
		"uppercase field": strings.Replace(checkback.Sign(testSecret, time.Now(), []byte(body)), "v1=", "V1=", 1),
	} {
		if code := serve(t, h, body, sig); code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, code)
		}
	}
	batch := `{"checks":[{"id":"victim","producer_group":"shop","topic":"t","check_count":1}]}`
	for name, sig := range map[string]string{
		"unsigned batch":         "",
		"batch of other secret":  checkback.Sign("txcs_attacker", time.Now(), []byte(batch)),
		"batch signed as single": checkback.Sign(testSecret, time.Now(), []byte(body)),
	} {
		if code := serve(t, h, batch, sig); code != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, code)
		}
	}
	var calls atomic.Int32
	counting := checkback.CheckerFunc(func(context.Context, checkback.Request) (checkback.Answer, error) {
		calls.Add(1)
		return checkback.AnswerRollback, nil
	})
	for _, opt := range []checkback.HandlerOption{checkback.WithSecret(), checkback.WithSecret("")} {
		signed := checkback.Sign(testSecret, time.Now(), []byte(body))
		if code := serve(t, checkback.Handler(counting, opt), body, signed); code != http.StatusUnauthorized {
			t.Errorf("handler without a secret: status %d, want 401", code)
		}
	}
	if n := ledgerRows(t, db, "victim"); n != 0 || calls.Load() != 0 {
		t.Fatalf("refused check-backs wrote %d ledger rows, asked the checker %d times", n, calls.Load())
	}
	// The transaction starts late, as it may: nothing decided it.
	tx, err := db.DB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := ledger.Record(context.Background(), tx, "victim"); err != nil {
		t.Fatalf("the victim's transaction after refused check-backs: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// A signed check-back is answered, with the new or the old secret.
	rotating := checkback.Handler(ledger, checkback.WithSecret("txcs_new", testSecret))
	if code := serve(t, rotating, body, checkback.Sign(testSecret, time.Now(), []byte(body))); code != http.StatusOK {
		t.Fatalf("signed check-back: status %d", code)
	}
	if code := serve(t, rotating, body, checkback.Sign("txcs_new", time.Now(), []byte(body))); code != http.StatusOK {
		t.Fatalf("check-back signed with the new secret: status %d", code)
	}
}

// TestSecurityReplayedCheckback: a signed check-back replayed after more
// than five minutes (or dated in the future) is refused and records
// nothing.
func TestSecurityReplayedCheckback(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ledger, err := checkback.LedgerChecker(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	h := checkback.Handler(ledger, checkback.WithSecret(testSecret))
	body := `{"id":"replayed","check_count":1}`
	for _, at := range []time.Duration{-checkback.MaxSignatureAge - time.Minute, -24 * time.Hour, checkback.MaxSignatureAge + time.Minute} {
		if code := serve(t, h, body, checkback.Sign(testSecret, time.Now().Add(at), []byte(body))); code != http.StatusUnauthorized {
			t.Errorf("signed %v from now: status %d, want 401", at, code)
		}
	}
	if n := ledgerRows(t, db, "replayed"); n != 0 {
		t.Fatalf("replayed check-backs wrote %d ledger rows", n)
	}
	err = checkback.VerifySignature(checkback.Sign(testSecret, time.Now().Add(-time.Hour), []byte(body)), []byte(body), time.Now(), testSecret)
	if !errors.Is(err, checkback.ErrBadSignature) || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("VerifySignature of an old signature: %v", err)
	}
	if code := serve(t, h, body, checkback.Sign(testSecret, time.Now().Add(-time.Minute), []byte(body))); code != http.StatusOK {
		t.Fatalf("a check-back signed a minute ago (clocks apart): status %d, want 200", code)
	}
}
