package config

import (
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg/internal/setting"
)

// DB is the database section (db.*).
type DB struct {
	// DSN is db.dsn in go-sql-driver/mysql form; after Load it has
	// parseTime=true and loc=UTC added: txmsg stores UTC DATETIME(6) values.
	DSN string `key:"db.dsn" flag:"dsn" help:"MySQL/MariaDB DSN, user:pass@tcp(host:3306)/db"`
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

// resolve checks d and completes it: the DSN gets parseTime and loc=UTC, and
// Addr is set from it.
func (d *DB) resolve() error {
	var p setting.Problems
	p.Check(d.MaxOpenConns >= 1 && d.MaxOpenConns <= 10000, "db.max_open_conns", d.MaxOpenConns, "want 1 to 10000")
	p.Check(d.ConnectTimeout >= time.Millisecond, "db.connect_timeout", d.ConnectTimeout, "want at least 1ms")
	raw := d.DSN
	d.DSN = ""
	if raw == "" {
		p.Add("db.dsn", raw, "required (flag --dsn, env TXMSG_DB_DSN)")
		return p.Err()
	}
	cfg, err := mysql.ParseDSN(raw)
	if err != nil {
		p.Add("db.dsn", MaskDSN(raw), "want user:pass@tcp(host:3306)/dbname: "+err.Error())
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

// MaskDSN hides the password of a DSN for messages.
func MaskDSN(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	if at < 0 {
		return dsn
	}
	if c := strings.IndexByte(dsn[:at], ':'); c >= 0 {
		return dsn[:c+1] + "***" + dsn[at:]
	}
	return dsn
}

// Validate checks m, naming a bad key.
func (m Metrics) Validate() error {
	if m.Listen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(m.Listen); err != nil {
		return &setting.Error{Key: "metrics.listen", Value: setting.Show(m.Listen), Want: "want HOST:PORT, or empty to disable"}
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
