package config

import (
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/txmsg/txmsg/broker"
	"github.com/txmsg/txmsg/internal/setting"
)

// BrokerAuth is the part of the broker's authentication that only the
// loader handles: the file holding the operator token.
type BrokerAuth struct {
	// OperatorTokenFile names a file holding the operator token, instead
	// of broker.auth.operator_token; surrounding white space is ignored.
	OperatorTokenFile string `key:"broker.auth.operator_token_file" help:"file holding the operator API token"`
}

// resolve reads the operator token from its file into c, when one is named.
// No error shows the token.
func (a BrokerAuth) resolve(c *broker.Config) error {
	if a.OperatorTokenFile == "" {
		return nil
	}
	var p setting.Problems
	if c.OperatorToken != "" {
		p.Add("broker.auth.operator_token_file", a.OperatorTokenFile, "broker.auth.operator_token is set too: choose one")
		return p.Err()
	}
	b, err := os.ReadFile(a.OperatorTokenFile)
	if err != nil {
		p.Add("broker.auth.operator_token_file", a.OperatorTokenFile, "want a readable file: "+err.Error())
		return p.Err()
	}
	if c.OperatorToken = strings.TrimSpace(string(b)); c.OperatorToken == "" {
		p.Add("broker.auth.operator_token_file", a.OperatorTokenFile, "the file is empty")
	}
	return p.Err()
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
	return newLoader(fs, Group{DB: defaultDB(), Log: defaultLog()}, func(c *Group) error {
		var p setting.Problems
		p.Join(c.DB.resolve())
		p.Join(c.Log.resolve())
		return p.Err()
	})
}
