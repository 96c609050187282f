package kafkax

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/txmsg/txmsg/internal/setting"
	"github.com/txmsg/txmsg/internal/testenv"
)

const (
	testUser     = "txmsg"
	testPassword = "s3cret-pw"
)

// roundTrip writes one record to topic with sec and reads it back with a
// group reader using sec.
func roundTrip(t *testing.T, addrs []string, sec Security, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr := NewTransport(sec)
	defer tr.CloseIdleConnections()
	w, err := NewWriter(addrs, WriterConfig{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		return w.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte("k"), Value: []byte("v")})
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := NewGroupReader(addrs, ReaderConfig{Group: "g-" + topic, Topics: []string{topic}, Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m, err := r.FetchMessage(ctx)
	if err != nil || string(m.Value) != "v" {
		t.Fatalf("read back: %q, %v", m.Value, err)
	}
}

func TestSecurityKafkaSASL(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 2, kfake.EnableSASL(),
		kfake.Superuser(MechanismPlain, testUser, testPassword),
		kfake.Superuser(MechanismScramSHA256, testUser, testPassword),
		kfake.Superuser(MechanismScramSHA512, testUser, testPassword))
	ctx := context.Background()
	for _, mech := range []string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			good, err := NewMechanism(mech, testUser, testPassword)
			if err != nil {
				t.Fatal(err)
			}
			if err := Ping(ctx, k.Addrs, Security{SASL: good}, 5*time.Second); err != nil {
				t.Fatalf("right password: %v", err)
			}
			roundTrip(t, k.Addrs, Security{SASL: good}, "sasl-"+strings.ToLower(mech))

			bad, err := NewMechanism(mech, testUser, "wrong")
			if err != nil {
				t.Fatal(err)
			}
			err = Ping(ctx, k.Addrs, Security{SASL: bad}, 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), "SASL authentication failed") || !strings.Contains(err.Error(), k.Addrs[0]) {
				t.Fatalf("wrong password: %v, want an error naming %s and \"SASL authentication failed\"", err, k.Addrs[0])
			}
			if strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), testPassword) {
				t.Fatalf("error shows a password: %v", err)
			}
		})
	}
}

func TestSecurityKafkaTLS(t *testing.T) {
	t.Parallel()
	ca := testenv.NewTLS(t)
	k := testenv.NewKafka(t, 2, kfake.TLS(ca.Server))
	ctx := context.Background()
	build := func(tc TLSConfig) Security {
		t.Helper()
		c := DefaultConfig()
		c.Brokers, c.TLS = k.Addrs, tc
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		s, err := c.Security()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	withCA := build(TLSConfig{CAFile: ca.CAFile, CertFile: ca.ClientCertFile, KeyFile: ca.ClientKeyFile})
	if err := Ping(ctx, k.Addrs, withCA, 5*time.Second); err != nil {
		t.Fatalf("private CA: %v", err)
	}
	roundTrip(t, k.Addrs, withCA, "tls-ca")
	if err := Ping(ctx, k.Addrs, build(TLSConfig{InsecureSkipVerify: true}), 5*time.Second); err != nil {
		t.Fatalf("insecure_skip_verify: %v", err)
	}
	err := Ping(ctx, k.Addrs, build(TLSConfig{Enabled: true}), 5*time.Second)
	var unknown x509.UnknownAuthorityError
	if err == nil || !errors.As(err, &unknown) {
		t.Fatalf("system CAs: %v, want an unknown authority", err)
	}
}

func TestSecurityKafkaTLSAndSASL(t *testing.T) {
	t.Parallel()
	ca := testenv.NewTLS(t)
	k := testenv.NewKafka(t, 2, kfake.TLS(ca.Server), kfake.EnableSASL(), kfake.Superuser(MechanismScramSHA256, testUser, testPassword))
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Brokers = k.Addrs
	c.TLS = TLSConfig{CAFile: ca.CAFile}
	c.SASL = SASLConfig{Mechanism: "scram-sha-256", Username: testUser, PasswordFile: pw}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := c.Security()
	if err != nil {
		t.Fatal(err)
	}
	if err := Ping(context.Background(), k.Addrs, s, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, k.Addrs, s, "tls-sasl")
}

func TestSecurityKafkaConfigErrors(t *testing.T) {
	t.Parallel()
	ca := testenv.NewTLS(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		tls  TLSConfig
		sasl SASLConfig
		want string
	}{
		{"bad mechanism", TLSConfig{}, SASLConfig{Mechanism: "MD5", Username: "u", Password: testPassword}, `kafka.sasl.mechanism: "MD5": want one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512`},
		{"no user", TLSConfig{}, SASLConfig{Mechanism: "PLAIN", Password: testPassword}, "kafka.sasl.username"},
		{"no password", TLSConfig{}, SASLConfig{Mechanism: "PLAIN", Username: "u"}, "kafka.sasl.password"},
		{"two passwords", TLSConfig{}, SASLConfig{Mechanism: "PLAIN", Username: "u", Password: testPassword, PasswordFile: missing}, "not both"},
		{"user without mechanism", TLSConfig{}, SASLConfig{Username: "u", Password: testPassword}, "kafka.sasl.mechanism: \"\": required"},
		{"unreadable password file", TLSConfig{}, SASLConfig{Mechanism: "PLAIN", Username: "u", PasswordFile: missing}, `kafka.sasl.password_file: "` + missing + `": want a readable file`},
		{"unreadable CA", TLSConfig{CAFile: missing}, SASLConfig{}, `kafka.tls.ca_file: "` + missing + `": want a readable PEM file`},
		{"CA not PEM", TLSConfig{CAFile: notPEM}, SASLConfig{}, `kafka.tls.ca_file: "` + notPEM + `": want a PEM file of certificates`},
		{"cert without key", TLSConfig{CertFile: ca.ClientCertFile}, SASLConfig{}, "kafka.tls.key_file: \"\": required with kafka.tls.cert_file"},
		{"unreadable cert", TLSConfig{CertFile: missing, KeyFile: ca.ClientKeyFile}, SASLConfig{}, `kafka.tls.cert_file: "` + missing + `"`},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		c.Brokers = []string{"127.0.0.1:9092"}
		c.TLS, c.SASL = tc.tls, tc.sasl
		err := c.Validate()
		if err == nil {
			_, err = c.Security()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			continue
		}
		var se *setting.Error
		if !errors.As(setting.Leaves(err)[0], &se) {
			t.Errorf("%s: %v is no setting.Error", tc.name, err)
		}
		if strings.Contains(err.Error(), testPassword) {
			t.Errorf("%s: error shows the password: %v", tc.name, err)
		}
	}
}

// Ping ends within its timeout against a port that accepts connections and
// never answers (kafka-go's SASL handshake would wait there for ever), and
// fails against a port that answers but is not Kafka.
func TestSecurityKafkaPingSilentOrForeignPort(t *testing.T) {
	t.Parallel()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	foreign := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(foreign.Close)
	plainMech, err := NewMechanism(MechanismPlain, testUser, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		addr string
		sec  Security
	}{
		"silent, SASL":    {silent.Addr().String(), Security{SASL: plainMech}},
		"silent":          {silent.Addr().String(), Security{}},
		"HTTP, not Kafka": {strings.TrimPrefix(foreign.URL, "http://"), Security{}},
	} {
		// Asked in a goroutine, so that a Ping that hangs fails the test
		// (the cleanup's closing of the held connections then ends it).
		done := make(chan error, 1)
		go func() { done <- Ping(context.Background(), []string{c.addr}, c.sec, time.Second) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.addr) {
				t.Errorf("%s: Ping = %v, want an error naming %s", name, err, c.addr)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Ping still running 10s into a 1s timeout", name)
		}
	}
}
