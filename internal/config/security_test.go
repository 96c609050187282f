package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/txmsg/txmsg/internal/testenv"
)

func loadBroker(t *testing.T, args ...string) (Broker, error) {
	t.Helper()
	fs := pflag.NewFlagSet("broker", pflag.ContinueOnError)
	l := NewBroker(fs)
	// The broker needs an operator token; these tests are about other keys.
	args = append([]string{"--broker.auth.operator_token", "test-operator-token-0123456789"}, args...)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return l.Load()
}

// TestSecurityConfigKafka: the kafka.tls.* and kafka.sasl.* keys build the
// TLS configuration and SASL mechanism of the relay and the broker, from
// flags, the environment or the file. It sets the environment, so it cannot
// run in parallel.
func TestSecurityConfigKafka(t *testing.T) {
	ca := testenv.NewTLS(t)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TXMSG_KAFKA_SASL_MECHANISM", "scram-sha-512")
	t.Setenv("TXMSG_KAFKA_SASL_USERNAME", "svc")
	t.Setenv("TXMSG_KAFKA_SASL_PASSWORD_FILE", pw)
	path := writeFile(t, "kafka:\n  tls:\n    ca_file: "+ca.CAFile+"\n    cert_file: "+ca.ClientCertFile+"\n    key_file: "+ca.ClientKeyFile+"\n")
	r, err := loadRelay(t, "--config", path, "--dsn", testDSN, "--brokers", testBrokers)
	if err != nil {
		t.Fatal(err)
	}
	if r.Relay.TLS == nil || r.Relay.TLS.RootCAs == nil || len(r.Relay.TLS.Certificates) != 1 || r.Relay.SASL == nil || r.Relay.SASL.Name() != "SCRAM-SHA-512" {
		t.Fatalf("relay: TLS %+v, SASL %v", r.Relay.TLS, r.Relay.SASL)
	}
	b, err := loadBroker(t, "--dsn", testDSN, "--brokers", testBrokers, "--kafka.tls.enabled", "--kafka.sasl.mechanism", "PLAIN")
	if err != nil {
		t.Fatal(err)
	}
	if b.Broker.Relay.TLS == nil || b.Broker.Relay.TLS.RootCAs != nil || b.Broker.Relay.SASL == nil || b.Broker.Relay.SASL.Name() != "PLAIN" {
		t.Fatalf("broker: TLS %+v, SASL %v", b.Broker.Relay.TLS, b.Broker.Relay.SASL)
	}
}

func TestSecurityConfigErrors(t *testing.T) {
	t.Parallel()
	ca := testenv.NewTLS(t)
	missing := filepath.Join(t.TempDir(), "missing")
	base := []string{"--dsn", testDSN, "--brokers", testBrokers}
	sasl := []string{"--kafka.sasl.username", "u", "--kafka.sasl.password", "hunter2"}
	cases := []struct {
		args []string
		want []string
	}{
		{append([]string{"--kafka.sasl.mechanism", "MD5"}, sasl...),
			[]string{`config: kafka.sasl.mechanism: "MD5": want one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512`}},
		{append([]string{"--kafka.sasl.mechanism", "MD5", "--kafka.tls.ca_file", missing}, sasl...),
			[]string{`config: kafka.sasl.mechanism: "MD5"`, `config: kafka.tls.ca_file: "` + missing + `": want a readable PEM file`}},
		{[]string{"--kafka.sasl.mechanism", "PLAIN", "--kafka.sasl.username", "u", "--kafka.sasl.password_file", missing},
			[]string{`config: kafka.sasl.password_file: "` + missing + `": want a readable file`}},
		{[]string{"--kafka.sasl.mechanism", "PLAIN", "--kafka.sasl.username", "u"}, []string{"config: kafka.sasl.password", "required"}},
		{[]string{"--kafka.tls.enabled=maybe"}, []string{`config: kafka.tls.enabled: "maybe": want true or false`}},
		{[]string{"--kafka.tls.cert_file", ca.ClientCertFile}, []string{"config: kafka.tls.key_file", "required with kafka.tls.cert_file"}},
		{[]string{"--db.tls_ca_file", missing}, []string{`config: db.tls_ca_file: "` + missing + `": want a readable PEM file`}},
		{[]string{"--db.tls_key_file", ca.ClientKeyFile}, []string{"config: db.tls_cert_file", "required with db.tls_key_file"}},
		{[]string{"--db.dsn_file", ca.CAFile}, []string{"config: db.dsn_file", "not both"}},
		{[]string{"--dsn", "", "--db.dsn_file", missing}, []string{`config: db.dsn_file: "` + missing + `": want a readable file`}},
	}
	for _, tc := range cases {
		_, err := loadRelay(t, append(append([]string(nil), base...), tc.args...)...)
		if err == nil {
			t.Errorf("%q: no error", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not contain %q", tc.args, err, w)
			}
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: error shows the password: %v", tc.args, err)
		}
	}
}

func TestSecurityConfigDB(t *testing.T) {
	t.Parallel()
	ca := testenv.NewTLS(t)
	dsn := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsn, []byte("  app:pw@tcp(db.example:3306)/shop\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("migrate", pflag.ContinueOnError)
	l := NewAdmin(fs)
	if err := fs.Parse([]string{"--db.dsn_file", dsn, "--db.tls_ca_file", ca.CAFile,
		"--db.tls_cert_file", ca.ClientCertFile, "--db.tls_key_file", ca.ClientKeyFile}); err != nil {
		t.Fatal(err)
	}
	c, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.DB.Addr != "db.example:3306" || !strings.Contains(c.DB.DSN, "parseTime=true") || c.DB.TLS == nil || c.DB.TLS.RootCAs == nil || len(c.DB.TLS.Certificates) != 1 {
		t.Fatalf("db: addr %q, dsn %q, TLS %+v", c.DB.Addr, c.DB.DSN, c.DB.TLS)
	}
	if _, err := c.DB.Connector(); err != nil {
		t.Fatal(err)
	}
}
func TestSecurityConfigBroker(t *testing.T) {
	t.Parallel()
	load := func(args ...string) (Broker, error) {
		fs := pflag.NewFlagSet("broker", pflag.ContinueOnError)
		l := NewBroker(fs)
		if err := fs.Parse(append([]string{"--dsn", testDSN, "--brokers", testBrokers}, args...)); err != nil {
			t.Fatal(err)
		}
		return l.Load()
	}
	const fileToken = "token-from-a-file-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "operator-token")
	if err := os.WriteFile(tokenFile, []byte(fileToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := load("--broker.auth.operator_token_file", tokenFile, "--checkback.allow_hosts", "shop.internal, 10.0.0.0/8",
		"--checkback.allow_loopback=true", "--broker.max_prepared_per_group", "7")
	if err != nil {
		t.Fatal(err)
	}
	b := c.Broker
	if b.Listen != "127.0.0.1:7070" || b.OperatorToken != fileToken || b.AuthDisabled || !b.CheckbackPolicy.AllowLoopback ||
		!slices.Equal(b.CheckbackPolicy.AllowHosts, []string{"shop.internal", "10.0.0.0/8"}) ||
		b.MaxPreparedPerGroup != 7 || b.MaxConcurrentRequests != 256 {
		t.Errorf("broker config: %+v", b)
	}
	if c, err := load("--broker.auth.disabled=true"); err != nil || !c.Broker.AuthDisabled || c.Broker.OperatorToken != "" {
		t.Errorf("auth disabled: %+v, %v", c.Broker, err)
	}
	const secretToken = "a-token-nobody-may-see-0123"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no operator token: the API needs one. Create it with 'openssl rand -hex 32"},
		{[]string{"--broker.auth.operator_token", secretToken, "--broker.auth.disabled=true"}, "choose one"},
		{[]string{"--broker.auth.operator_token", secretToken, "--broker.auth.operator_token_file", tokenFile}, "choose one"},
		{[]string{"--broker.auth.operator_token_file", tokenFile + ".missing"}, "operator-token.missing"},
		{[]string{"--broker.auth.operator_token", "short"}, "want at least 16"},
		{[]string{"--broker.auth.operator_token", secretToken, "--broker.auth.disabled=maybe"}, "broker.auth.disabled"},
		{[]string{"--broker.auth.operator_token", secretToken, "--broker.tls.cert_file", "c.pem"}, "broker.tls.key_file"},
		{[]string{"--broker.auth.operator_token", secretToken, "--checkback.allow_hosts", "not a host"}, "allow_hosts"},
	} {
		_, err := load(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), secretToken) || strings.Contains(err.Error(), fileToken)) {
			t.Errorf("%q: error %q shows the token", tc.args, err)
		}
	}
}
