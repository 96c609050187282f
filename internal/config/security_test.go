package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestConfigBrokerSecurity(t *testing.T) {
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
		"--checkback.allow_loopback", "true", "--broker.max_prepared_per_group", "7")
	if err != nil {
		t.Fatal(err)
	}
	b := c.Broker
	if b.Listen != "127.0.0.1:7070" || b.OperatorToken != fileToken || b.AuthDisabled || !b.CheckbackPolicy.AllowLoopback ||
		!slices.Equal(b.CheckbackPolicy.AllowHosts, []string{"shop.internal", "10.0.0.0/8"}) ||
		b.MaxPreparedPerGroup != 7 || b.MaxConcurrentRequests != 256 {
		t.Errorf("broker config: %+v", b)
	}
	if c, err := load("--broker.auth.disabled", "true"); err != nil || !c.Broker.AuthDisabled || c.Broker.OperatorToken != "" {
		t.Errorf("auth disabled: %+v, %v", c.Broker, err)
	}
	const secretToken = "a-token-nobody-may-see-0123"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no operator token: the API needs one. Create it with 'openssl rand -hex 32"},
		{[]string{"--broker.auth.operator_token", secretToken, "--broker.auth.disabled", "true"}, "choose one"},
		{[]string{"--broker.auth.operator_token", secretToken, "--broker.auth.operator_token_file", tokenFile}, "choose one"},
		{[]string{"--broker.auth.operator_token_file", tokenFile + ".missing"}, "operator-token.missing"},
		{[]string{"--broker.auth.operator_token", "short"}, "want at least 16"},
		{[]string{"--broker.auth.operator_token", secretToken, "--broker.auth.disabled", "maybe"}, "broker.auth.disabled"},
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
