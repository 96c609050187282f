package config

import (
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/txmsg/txmsg/broker"
)

// The broker's security keys: authentication, TLS, resource bounds and the
// check-back address policy.
func brokerSecurityKeys() []key {
	return []key{
		{"broker.auth.operator_token", "broker.auth.operator_token", "",
			"operator API token; prefer operator_token_file or env TXMSG_BROKER_AUTH_OPERATOR_TOKEN (flags show in ps)"},
		{"broker.auth.operator_token_file", "broker.auth.operator_token_file", "", "file holding the operator API token"},
		{"broker.auth.disabled", "broker.auth.disabled", "false", "true turns API authentication off: development only"},
		{"broker.tls.cert_file", "broker.tls.cert_file", "", "PEM certificate: serve the API over TLS"},
		{"broker.tls.key_file", "broker.tls.key_file", "", "PEM private key of broker.tls.cert_file"},
		{"broker.tls.client_ca_file", "broker.tls.client_ca_file", "", "PEM CA: require client certificates it signed (mutual TLS)"},
		{"broker.max_concurrent_requests", "broker.max_concurrent_requests", "256", "API requests served at once; more get 503"},
		{"broker.max_prepared_per_group", "broker.max_prepared_per_group", "100000", "prepared messages per producer group; more get 429"},
		checkbackAllowLoopbackKey(),
		checkbackAllowHostsKey(),
	}
}

func checkbackAllowLoopbackKey() key {
	return key{"checkback.allow_loopback", "checkback.allow_loopback", "false",
		"true lets check-backs reach loopback addresses: development and tests"}
}

func checkbackAllowHostsKey() key {
	return key{"checkback.allow_hosts", "checkback.allow_hosts", "",
		"the only hosts (names, IPs, CIDRs) check-backs may reach; empty: any but the refused ones"}
}

// brokerSecurity reads the security keys into c.
func (r *reader) brokerSecurity(c *broker.Config) {
	c.AuthDisabled = r.oneOf("broker.auth.disabled", "false", "true") == "true"
	c.OperatorToken = r.operatorToken()
	c.TLSCertFile = r.str("broker.tls.cert_file")
	c.TLSKeyFile = r.str("broker.tls.key_file")
	c.TLSClientCAFile = r.str("broker.tls.client_ca_file")
	c.MaxConcurrentRequests = r.integer("broker.max_concurrent_requests", 1, 1<<20)
	c.MaxPreparedPerGroup = r.integer("broker.max_prepared_per_group", 1, 1<<30)
	c.CheckbackPolicy = r.checkbackPolicy()
	switch {
	case c.AuthDisabled && c.OperatorToken != "":
		r.fail("broker.auth.disabled", true, "an operator token is set too: choose one")
	case !c.AuthDisabled && c.OperatorToken == "" && r.str("broker.auth.operator_token_file") == "":
		r.errs = append(r.errs, broker.ErrNoOperatorToken)
	}
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		r.fail("broker.tls.key_file", c.TLSKeyFile, "set broker.tls.cert_file and key_file both, or neither")
	case c.TLSClientCAFile != "" && c.TLSCertFile == "":
		r.fail("broker.tls.client_ca_file", c.TLSClientCAFile, "needs broker.tls.cert_file and key_file")
	}
}

// operatorToken returns broker.auth.operator_token, or the content of
// broker.auth.operator_token_file. No error shows the token.
func (r *reader) operatorToken() string {
	tok, file := r.str("broker.auth.operator_token"), r.str("broker.auth.operator_token_file")
	if file == "" {
		return tok
	}
	if tok != "" {
		r.fail("broker.auth.operator_token_file", file, "broker.auth.operator_token is set too: choose one")
		return ""
	}
	b, err := os.ReadFile(file)
	if err != nil {
		r.fail("broker.auth.operator_token_file", file, err.Error())
		return ""
	}
	tok = strings.TrimSpace(string(b))
	if tok == "" {
		r.fail("broker.auth.operator_token_file", file, "the file is empty")
	}
	return tok
}

func (r *reader) checkbackPolicy() broker.AddressPolicy {
	return broker.AddressPolicy{
		AllowLoopback: r.oneOf("checkback.allow_loopback", "false", "true") == "true",
		AllowHosts:    r.list("checkback.allow_hosts"),
	}
}

// Group is the configuration of `txmsg group`: the database, and the
// check-back address policy registrations must pass.
type Group struct {
	DB     DB
	Log    Log
	Policy broker.AddressPolicy
}

// NewGroup registers the flags of `txmsg group` on fs (--config, --dsn,
// db.*, log.*, checkback.allow_loopback and checkback.allow_hosts) and
// returns its Loader.
func NewGroup(fs *pflag.FlagSet) *Loader[Group] {
	keys := concat(dbKeys(""), logKeys(), []key{checkbackAllowLoopbackKey(), checkbackAllowHostsKey()})
	return newLoader(fs, keys, func(r *reader) Group {
		return Group{DB: r.db(), Log: r.log(), Policy: r.checkbackPolicy()}
	})
}
