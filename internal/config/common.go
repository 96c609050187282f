package config

import (
	"crypto/tls"
	"crypto/x509"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg/internal/setting"
	"github.com/txmsg/txmsg/internal/sqlx/mysqlx"
)

// DB is the database section (db.*).
type DB struct {
	// DSN is db.dsn in go-sql-driver/mysql form; after Load it has
	// parseTime=true and loc=UTC added: txmsg stores UTC DATETIME(6) values.
	DSN string `key:"db.dsn" flag:"dsn" help:"MySQL/MariaDB DSN, user:pass@tcp(host:3306)/db; prefer env TXMSG_DB_DSN or db.dsn_file to a flag"`
	// DSNFile names a file holding the DSN, instead of DSN; surrounding
	// white space is ignored. After Load, DSN holds what it read.
	DSNFile string `key:"db.dsn_file" help:"file holding the DSN, instead of db.dsn"`
	// TLSCAFile is a PEM bundle of the CAs that sign the server's
	// certificate: set, connections use TLS and trust these CAs only.
	TLSCAFile string `key:"db.tls_ca_file" help:"PEM file of the CAs that sign the database server's certificate; turns TLS on"`
	// TLSCertFile and TLSKeyFile are a PEM client certificate and its key,
	// for servers that require one (REQUIRE X509).
	TLSCertFile string `key:"db.tls_cert_file" help:"PEM client certificate, with db.tls_key_file; turns TLS on"`
	TLSKeyFile  string `key:"db.tls_key_file" help:"PEM key of db.tls_cert_file"`
	// TLS is built by Load from the files above; nil leaves TLS to the
	// DSN's tls parameter.
	TLS *tls.Config
	// Addr is the server's address from the DSN, for messages.
	Addr string
	// MaxOpenConns caps the pool (default 32).
	MaxOpenConns int `key:"db.max_open_conns" help:"most open database connections"`
	// ConnectTimeout bounds the first connection at start-up (default 5s).
	ConnectTimeout time.Duration `key:"db.connect_timeout" help:"timeout of the first database connection"`
}

// Metrics is the metrics section (metrics.*).
type Metrics struct {
	// Listen is the HOST:PORT serving /healthz, /readyz and /metrics; empty
	// turns the server off (default: DefaultRelayMetricsListen or
	// DefaultBrokerMetricsListen).
	Listen string `key:"metrics.listen" help:"address of /healthz, /readyz and /metrics; empty disables"`
}

// Log is the logging section (log.*).
type Log struct {
	// Level is the least severe level logged (default info); it is
	// reloaded while the daemon runs.
	Level slog.Level `key:"log.level" help:"log level: debug, info, warn or error (reloaded while running)"`
	// Format is "text" or "json" (default text).
	Format string `key:"log.format" help:"log format: text or json"`
}

// Default metrics.listen of each daemon: they differ so that a relay and a
// broker can run on one host.
const (
	DefaultRelayMetricsListen  = "127.0.0.1:9464"
	DefaultBrokerMetricsListen = "127.0.0.1:9465"
)

func defaultDB() DB   { return DB{MaxOpenConns: 32, ConnectTimeout: 5 * time.Second} }
func defaultLog() Log { return Log{Level: slog.LevelInfo, Format: "text"} }

// resolve checks d and completes it: the DSN is read from DSNFile when
// set, gets parseTime and loc=UTC, and sets Addr; TLS is built from the
// files named.
func (d *DB) resolve() error {
	var p setting.Problems
	p.Check(d.MaxOpenConns >= 1 && d.MaxOpenConns <= 10000, "db.max_open_conns", d.MaxOpenConns, "want 1 to 10000")
	p.Check(d.ConnectTimeout >= time.Millisecond, "db.connect_timeout", d.ConnectTimeout, "want at least 1ms")
	d.TLS = d.buildTLS(&p)
	raw := d.DSN
	d.DSN = ""
	if d.DSNFile != "" {
		if raw != "" {
			p.Add("db.dsn_file", d.DSNFile, "set db.dsn or db.dsn_file, not both")
			return p.Err()
		}
		b, err := os.ReadFile(d.DSNFile)
		if err != nil {
			p.Add("db.dsn_file", d.DSNFile, "want a readable file: "+err.Error())
			return p.Err()
		}
		raw = strings.TrimSpace(string(b))
		if raw == "" {
			p.Add("db.dsn_file", d.DSNFile, "the file is empty: want a DSN in it")
			return p.Err()
		}
	}
	if raw == "" {
		p.Add("db.dsn", raw, "required (env TXMSG_DB_DSN, db.dsn_file or flag --dsn)")
		return p.Err()
	}
	cfg, err := mysql.ParseDSN(raw)
	if err != nil {
		// The driver's message may quote the DSN, password and all.
		msg := err.Error()
		if pw := dsnPassword(raw); pw != "" {
			msg = strings.ReplaceAll(msg, pw, "***")
		}
		p.Add("db.dsn", MaskDSN(raw), "want user:pass@tcp(host:3306)/dbname: "+msg)
		return p.Err()
	}
	if cfg.DBName == "" {
		p.Add("db.dsn", MaskDSN(raw), "names no database: want user:pass@tcp(host:3306)/dbname")
		return p.Err()
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	d.DSN = cfg.FormatDSN()
	d.Addr = cfg.Addr
	return p.Err()
}

// buildTLS reads the db.tls_* files, or returns nil when none is set.
func (d *DB) buildTLS(p *setting.Problems) *tls.Config {
	if d.TLSCAFile == "" && d.TLSCertFile == "" && d.TLSKeyFile == "" {
		return nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if d.TLSCAFile != "" {
		pem, err := os.ReadFile(d.TLSCAFile)
		switch {
		case err != nil:
			p.Add("db.tls_ca_file", d.TLSCAFile, "want a readable PEM file: "+err.Error())
		default:
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				p.Add("db.tls_ca_file", d.TLSCAFile, "want a PEM file of certificates: none found")
			}
		}
	}
	switch {
	case d.TLSCertFile == "" && d.TLSKeyFile == "":
	case d.TLSCertFile == "":
		p.Add("db.tls_cert_file", d.TLSCertFile, "required with db.tls_key_file")
	case d.TLSKeyFile == "":
		p.Add("db.tls_key_file", d.TLSKeyFile, "required with db.tls_cert_file")
	default:
		cert, err := tls.LoadX509KeyPair(d.TLSCertFile, d.TLSKeyFile)
		if err != nil {
			p.Add("db.tls_cert_file", d.TLSCertFile, "want a PEM certificate matching db.tls_key_file "+setting.Show(d.TLSKeyFile)+": "+err.Error())
		} else {
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	return tc
}

// Connector returns a connector to the database d describes, with d.TLS
// when set, a strict sql_mode on every connection (mysqlx.Strict) and
// arguments interpolated client-side (mysqlx.Interpolate). Unlike mysql.RegisterTLSConfig it keeps the TLS configuration
// out of the driver's global registry.
func (d DB) Connector() (driver.Connector, error) {
	cfg, err := mysql.ParseDSN(d.DSN)
	if err != nil {
		return nil, fmt.Errorf("database at %s: DSN %s: %w", d.Addr, MaskDSN(d.DSN), err)
	}
	if d.TLS != nil {
		cfg.TLS = d.TLS.Clone()
	}
	if err := mysqlx.Strict(cfg); err != nil {
		return nil, fmt.Errorf("database at %s: %w", d.Addr, err)
	}
	mysqlx.Interpolate(cfg, d.DSN)
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("database at %s: %w", d.Addr, err)
	}
	return c, nil
}

// MaskDSN hides the password of a DSN for messages. A DSN without "@"
// whose part before the first "/" holds a ":" outside an address (a
// mistyped "user:pass/db") has all that part hidden.
func MaskDSN(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	if at < 0 {
		if pw := dsnPassword(dsn); pw != "" {
			return "***" + dsn[strings.IndexByte(dsn, ':')+1+len(pw):]
		}
		return dsn
	}
	if c := strings.IndexByte(dsn[:at], ':'); c >= 0 {
		return dsn[:c+1] + "***" + dsn[at:]
	}
	return dsn
}

// dsnPassword returns what may be the password of dsn: after the first ":"
// of the part before "@", or, without "@", of the part before the first "/"
// unless that part is an address ("tcp(host:3306)").
func dsnPassword(dsn string) string {
	user := dsn
	if at := strings.LastIndex(dsn, "@"); at >= 0 {
		user = dsn[:at]
	} else {
		if slash := strings.IndexByte(dsn, '/'); slash >= 0 {
			user = dsn[:slash]
		}
		if strings.ContainsAny(user, "()") {
			return ""
		}
	}
	if c := strings.IndexByte(user, ':'); c >= 0 && c+1 < len(user) {
		return user[c+1:]
	}
	return ""
}

// Validate checks m, naming a bad key.
func (m Metrics) Validate() error {
	if m.Listen == "" {
		return nil
	}
	if !setting.ListenAddr(m.Listen) {
		return &setting.Error{Key: "metrics.listen", Value: setting.Show(m.Listen), Want: "want HOST:PORT (PORT 0 to 65535), or empty to disable"}
	}
	return nil
}

// resolve checks l, naming a bad key, and lowercases Format. Level is
// checked as it is read.
func (l *Log) resolve() error {
	l.Format = strings.ToLower(l.Format)
	if l.Format != "text" && l.Format != "json" {
		return &setting.Error{Key: "log.format", Value: setting.Show(l.Format), Want: "want one of text, json"}
	}
	return nil
}
