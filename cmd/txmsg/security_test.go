package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// TestSecurityRelayTLSAndSASL runs the relay daemon against a Kafka that
// requires TLS with a private CA and SASL: it delivers end to end, and with a
// wrong password it fails start-up naming the brokers and the cause.
func TestSecurityRelayTLSAndSASL(t *testing.T) {
	t.Parallel()
	const user, pass = "relay", "relay-pw-9d2"
	db := testenv.NewDB(t)
	ca := testenv.NewTLS(t)
	k := testenv.NewKafka(t, 3, kfake.TLS(ca.Server), kfake.EnableSASL(), kfake.Superuser(kafkax.MechanismScramSHA256, user, pass))
	secure := func(passFile string) []string {
		return []string{"relay", "--dsn", db.DSN, "--brokers", k.Addrs[0], "--metrics.listen", "",
			"--kafka.tls.ca_file", ca.CAFile, "--kafka.sasl.mechanism", "SCRAM-SHA-256",
			"--kafka.sasl.username", user, "--kafka.sasl.password_file", passFile}
	}

	r := txmsgRun(t, secure(writeFile(t, "wrong", "not-the-password\n"))...)
	if r.code != 1 || !strings.Contains(r.stderr, "SASL authentication failed") || !strings.Contains(r.stderr, k.Addrs[0]) {
		t.Fatalf("wrong password: status %d, stderr:\n%s\nwant status 1 naming %s and \"SASL authentication failed\"", r.code, r.stderr, k.Addrs[0])
	}
	if strings.Contains(r.stderr, "not-the-password") {
		t.Fatalf("stderr shows the password:\n%s", r.stderr)
	}

	p := txmsgStart(t, secure(writeFile(t, "right", pass+"\n"))...)
	p.waitLine(true, regexp.MustCompile(`txmsg relay started`), 20*time.Second)
	pub, err := outbox.NewPublisher()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 20
	for i := range n {
		msg := txmsg.Message{Topic: "secure", Key: []byte("k" + strconv.Itoa(i%4)), Value: []byte(strconv.Itoa(i))}
		if err := pub.Publish(ctx, db.DB, msg); err != nil {
			t.Fatal(err)
		}
	}
	mech, err := kafkax.NewMechanism(kafkax.MechanismScramSHA256, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	dialer := &kafka.Dialer{Timeout: 10 * time.Second, TLS: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}, SASLMechanism: mech}
	testenv.Eventually(t, 30*time.Second, func() error {
		recs, err := testenv.RecordsVia(ctx, dialer, k.Addrs, "secure")
		if err != nil || len(recs) < n {
			return fmt.Errorf("%d of %d records, %v", len(recs), n, err)
		}
		return nil
	})
	if code := p.stop(30 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
	if strings.Contains(p.errText(), pass) {
		t.Errorf("the relay logged the password:\n%s", p.errText())
	}
}

// TestSecurityDevKafkaSASL: devkafka --sasl-user/--sasl-password requires
// SASL PLAIN or SCRAM-SHA-256 as that user.
func TestSecurityDevKafkaSASL(t *testing.T) {
	t.Parallel()
	p := txmsgStart(t, "devkafka", "--listen", "127.0.0.1:0", "--sasl-user", "dev", "--sasl-password", "dev-pw")
	addr := p.waitLine(false, regexp.MustCompile(`^(127\.0\.0\.1:\d+)$`), 10*time.Second)[1]
	ctx := context.Background()
	for _, m := range []string{kafkax.MechanismPlain, kafkax.MechanismScramSHA256} {
		for pass, ok := range map[string]bool{"dev-pw": true, "guess": false} {
			mech, err := kafkax.NewMechanism(m, "dev", pass)
			if err != nil {
				t.Fatal(err)
			}
			err = kafkax.Ping(ctx, []string{addr}, kafkax.Security{SASL: mech}, 5*time.Second)
			if ok && err != nil {
				t.Errorf("%s with the right password: %v", m, err)
			}
			if !ok && (err == nil || !strings.Contains(err.Error(), "SASL authentication failed")) {
				t.Errorf("%s with a wrong password: %v, want SASL authentication failed", m, err)
			}
		}
	}
	if code := p.stop(10 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
	r := txmsgRun(t, "devkafka", "--sasl-user", "dev")
	if r.code != 2 || !strings.Contains(r.stderr, "--sasl-user needs --sasl-password") {
		t.Errorf("user without password: status %d, %s", r.code, r.stderr)
	}
}

// TestSecurityDBPrivateCA: db.tls_ca_file makes the client insist on TLS
// with that CA (the test server has TLS off, so the connection must fail
// saying so), and db.dsn_file keeps the DSN off the command line.
func TestSecurityDBPrivateCA(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	ca := testenv.NewTLS(t)
	dsnFile := writeFile(t, "dsn", db.DSN+"\n")
	r := txmsgRunEnv(t, []string{"TXMSG_DB_DSN_FILE=" + dsnFile}, "migrate", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "applied") {
		t.Fatalf("db.dsn_file: status %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = txmsgRunEnv(t, []string{"TXMSG_DB_DSN_FILE=" + dsnFile, "TXMSG_DB_TLS_CA_FILE=" + ca.CAFile}, "migrate", "status")
	if r.code != 1 || !strings.Contains(r.stderr, "TLS requested but server does not support TLS") {
		t.Fatalf("db.tls_ca_file against a server without TLS: status %d, stderr %s; want a TLS failure", r.code, r.stderr)
	}
}
