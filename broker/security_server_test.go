package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
)

// TestSecuritySecretsAbsentFromLogs runs a broker and a producer through
// registration, sends, a lost commit resolved by a signed check-back,
// refused tokens and signatures and a rotation, with every log at debug:
// no line shows a token or a secret, and no API answer after the
// registration does.
func TestSecuritySecretsAbsentFromLogs(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	kafka := testenv.NewKafka(t, 2)
	ctx := context.Background()
	if _, err := db.DB.ExecContext(ctx, `CREATE TABLE biz (id VARCHAR(64) PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := startServerWith(t, db.DB, testServerConfig(kafka.Addrs), WithLogger(log))
	base := "http://" + srv.Addr()
	op := srv.client

	first, err := op.PutGroup(ctx, "shop", "http://127.0.0.1:9/placeholder", false)
	if err != nil {
		t.Fatal(err)
	}
	client, err := halfmsg.NewClient(base, halfmsg.WithToken(first.Token))
	if err != nil {
		t.Fatal(err)
	}
	p, err := halfmsg.NewProducer(client, "shop", db.DB, halfmsg.WithProducerSecret(first.Secret),
		halfmsg.WithProducerCheckTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	producer := httptest.NewServer(p.CheckbackHandler(checkback.WithHandlerLogger(log)))
	t.Cleanup(producer.Close)
	if g, err := op.PutGroup(ctx, "shop", producer.URL, false); err != nil || g.Token != "" || g.Secret != "" {
		t.Fatalf("re-point: %+v, %v", g, err)
	}
	insert := func(id string) func(context.Context, *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO biz (id) VALUES (?)`, id)
			return err
		}
	}
	if err := p.SendInTransaction(ctx, txmsg.Message{ID: "sent", Topic: "sec", Value: []byte("v")}, insert("sent")); err != nil {
		t.Fatal(err)
	}
	// A commit lost after the local transaction: the signed check-back finds
	// the ledger row.
	if _, err := client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "shop", CheckTimeout: 50 * time.Millisecond,
		Message: txmsg.Message{ID: "lost", Topic: "sec", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if err := recordInTx(ctx, db.DB, p.Ledger(), "lost", true); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		info, err := srv.Store().Get(ctx, "lost")
		if err == nil && info.State != halfmsg.StateCommitted && info.State != halfmsg.StateDelivered {
			err = fmt.Errorf("lost is %s, want committed or delivered", info.State)
		}
		return err
	})

	// Refused: a wrong token, a check-back without and with a wrong
	// signature, a check-back signed with the old secret after a rotation.
	if status, _ := (rawCall{method: "GET", path: "/v1/half-messages", token: first.Token + "0"}).do(t, base); status != 401 {
		t.Fatalf("wrong token: %d", status)
	}
	for _, sig := range []string{"", checkback.Sign("not-the-secret", time.Now(), []byte(`{"id":"x"}`))} {
		req, _ := http.NewRequest("POST", producer.URL, strings.NewReader(`{"id":"x"}`))
		req.Header.Set(checkback.SignatureHeader, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("check-back signed %q: %d, want 401", sig, resp.StatusCode)
		}
	}
	rotated, err := op.PutGroup(ctx, "shop", "", true)
	if err != nil || rotated.Token == "" {
		t.Fatalf("rotate: %+v, %v", rotated, err)
	}
	stale, err := client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "shop",
		Message: txmsg.Message{Topic: "sec", Value: []byte("v")}})
	if !errors.Is(err, txmsg.ErrUnauthorized) {
		t.Fatalf("prepare with the rotated token: %q, %v", stale, err)
	}
	newClient, err := halfmsg.NewClient(base, halfmsg.WithToken(rotated.Token))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newClient.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "shop", CheckTimeout: 50 * time.Millisecond,
		MaxChecks: 1, Message: txmsg.Message{ID: "old-secret", Topic: "sec", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	info := waitState(t, srv.Store(), nil, "old-secret", halfmsg.StateDiscarded, 15*time.Second)
	if info.LastCheckError != "http_status 401" {
		t.Fatalf("check-back signed with the new secret at a producer with the old: %q", info.LastCheckError)
	}

	var answers strings.Builder
	for _, path := range []string{"/v1/producer-groups/shop", "/v1/producer-groups", "/v1/half-messages",
		"/v1/half-messages/lost", "/v1/half-messages/lost/checks"} {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+testOperatorToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers.Write(data)
	}
	text := logs.String()
	for _, want := range []string{`actor=operator`, `actor="group shop"`, "producer group credentials rotated",
		"checkback: refused a check-back", "half message committed"} {
		if !strings.Contains(text, want) {
			t.Errorf("the log lacks %q: is it on?", want)
		}
	}
	secrets := map[string]string{"operator token": testOperatorToken, "first token": first.Token,
		"first secret": first.Secret, "rotated token": rotated.Token, "rotated secret": rotated.Secret}
	for name, s := range secrets {
		if strings.Contains(text, s) || strings.Contains(text, tokenHash(s)) {
			t.Errorf("the log shows the %s", name)
		}
		if strings.Contains(answers.String(), s) {
			t.Errorf("an API answer after registration shows the %s", name)
		}
	}
}

// TestSecurityAuthDisabledWarns: a broker without authentication says so at
// start and again every interval.
func TestSecurityAuthDisabledWarns(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	kafka := testenv.NewKafka(t, 1)
	cfg := testServerConfig(kafka.Addrs)
	cfg.OperatorToken, cfg.AuthDisabled = "", true
	logs := &testenv.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	srv := startServerWith(t, db.DB, cfg, WithLogger(log))
	testenv.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "API authentication is disabled") {
			return errors.New("no warning yet")
		}
		return nil
	})
	anonymous, err := halfmsg.NewClient("http://" + srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := anonymous.List(context.Background(), halfmsg.Filter{}); err != nil {
		t.Fatalf("list without a token, auth disabled: %v", err)
	}
	repeats := &testenv.LogBuffer{}
	s := &Server{log: slog.New(slog.NewTextHandler(repeats, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.warnAuthDisabled(ctx, 5*time.Millisecond) }()
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := strings.Count(repeats.String(), "authentication is disabled"); n < 3 {
			return errors.New("fewer than 3 warnings")
		}
		return nil
	})
	cancel()
	<-done
}

// TestSecurityResourceBounds: past max_prepared_per_group a group's prepare
// gets 429 (other groups are unaffected), and past max_concurrent_requests
// a request gets 503.
func TestSecurityResourceBounds(t *testing.T) {
	t.Parallel()
	env := newAPIEnvWith(t, nil, []HandlerOption{WithOperatorToken(testOperatorToken), WithMaxPreparedPerGroup(2)})
	ctx := context.Background()
	prepare := func(group string) (string, error) {
		return env.client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: group, Message: txmsg.Message{Topic: "t", Value: []byte("v")}})
	}
	first, err := prepare("busy")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prepare("busy"); err != nil {
		t.Fatal(err)
	}
	var ae *halfmsg.APIError
	if _, err := prepare("busy"); !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != halfmsg.CodeTooManyPrepared {
		t.Fatalf("third prepare: %v, want 429 too_many_prepared", err)
	}
	if _, err := prepare("idle"); err != nil {
		t.Fatalf("another group: %v", err)
	}
	if _, err := env.client.Commit(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := prepare("busy"); err != nil {
		t.Fatalf("prepare after a commit freed a place: %v", err)
	}

	one := newAPIEnvWith(t, nil, []HandlerOption{WithOperatorToken(testOperatorToken), WithMaxConcurrentRequests(1)})
	// A commit waiting for a row lock the test holds keeps the only slot.
	id, err := one.client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g", Message: txmsg.Message{Topic: "t", Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := one.db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.ExecContext(ctx, `SELECT id FROM txmsg_half_messages WHERE id = ? FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() {
		_, err := one.client.Commit(ctx, id)
		committed <- err
	}()
	// Once the commit waits for the lock, it holds the slot: the next
	// request is refused.
	testenv.Eventually(t, 10*time.Second, func() error {
		select {
		case err := <-committed:
			t.Fatalf("the commit returned (%v) while the test held its row lock", err)
		default:
		}
		var n int
		if err := one.db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.PROCESSLIST
WHERE DB = ? AND INFO LIKE 'UPDATE txmsg_half_messages%'`, one.db.Name).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("the commit does not wait for the lock yet")
		}
		return nil
	})
	list := rawCall{method: "GET", path: "/v1/half-messages", token: testOperatorToken}
	if status, code := list.do(t, one.url); status != http.StatusServiceUnavailable || code != halfmsg.CodeOverloaded {
		t.Fatalf("a request while the only slot is held: %d %s, want 503 overloaded", status, code)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-committed:
		if err != nil {
			t.Fatalf("the commit that held the slot: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the commit did not return within 20s of the lock's release")
	}
	if status, _ := list.do(t, one.url); status != http.StatusOK {
		t.Fatalf("after the slot freed: %d, want 200", status)
	}
}

// TestSecurityMutualTLS: with broker.tls.* the API speaks only TLS, and with
// a client CA only to clients holding a certificate it signed.
func TestSecurityMutualTLS(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	kafka := testenv.NewKafka(t, 1)
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	issue(t, ca, caKey, "broker", x509.ExtKeyUsageServerAuth, filepath.Join(dir, "server"))
	clientCert := issue(t, ca, caKey, "producer", x509.ExtKeyUsageClientAuth, filepath.Join(dir, "client"))
	cfg := testServerConfig(kafka.Addrs)
	cfg.TLSCertFile, cfg.TLSKeyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	cfg.TLSClientCAFile = filepath.Join(dir, "ca.pem")
	srv := startServer(t, db.DB, cfg)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	client := func(certs ...tls.Certificate) *halfmsg.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}
		c, err := halfmsg.NewClient("https://"+srv.Addr(), halfmsg.WithToken(testOperatorToken),
			halfmsg.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	if _, _, err := client(clientCert).List(ctx, halfmsg.Filter{}); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	var ae *halfmsg.APIError
	if _, _, err := client().List(ctx, halfmsg.Filter{}); err == nil || errors.As(err, &ae) {
		t.Fatalf("without a client certificate: %v, want a TLS failure", err)
	}
	if _, _, err := srv.client.List(ctx, halfmsg.Filter{}); err == nil {
		t.Fatalf("plain HTTP to a TLS API: %v, want a failure", err)
	}
	bad := cfg
	bad.TLSClientCAFile = filepath.Join(dir, "server.key")
	if _, err := NewServer(db.DB, bad); err == nil || !strings.Contains(err.Error(), "client_ca_file") {
		t.Fatalf("a client CA file without a certificate: %v", err)
	}
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "txmsg test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

// issue makes a certificate for 127.0.0.1 signed by ca, writes it to
// base.pem and its key to base.key, and returns it.
func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, usage x509.ExtKeyUsage, base string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, base+".pem", "CERTIFICATE", der)
	writePEM(t, base+".key", "EC PRIVATE KEY", keyDER)
	cert, err := tls.LoadX509KeyPair(base+".pem", base+".key")
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
