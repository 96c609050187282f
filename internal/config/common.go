package config

import (
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg/internal/kafkax"
)

// DB is the database section (db.*).
type DB struct {
	// DSN is db.dsn in go-sql-driver/mysql form, with parseTime=true and
	// loc=UTC added: txmsg stores UTC DATETIME(6) values.
	DSN string
	// Addr is the server's address from the DSN, for messages.
	Addr string
	// MaxOpenConns caps the pool (db.max_open_conns).
	MaxOpenConns int
	// ConnectTimeout bounds the first connection at start-up
	// (db.connect_timeout).
	ConnectTimeout time.Duration
}

// Kafka is the Kafka section (kafka.*).
type Kafka struct {
	// Brokers are the bootstrap addresses, HOST:PORT (kafka.brokers).
	Brokers []string
	// DialTimeout bounds the reachability check at start-up
	// (kafka.dial_timeout).
	DialTimeout time.Duration
	// BatchTimeout is how long a partial produce batch waits
	// (kafka.batch_timeout).
	BatchTimeout time.Duration
	// WriteTimeout bounds one produce request (kafka.write_timeout).
	WriteTimeout time.Duration
}

// Metrics is the metrics section (metrics.*).
type Metrics struct {
	// Listen is the HOST:PORT serving /healthz, /readyz and /metrics
	// (metrics.listen); empty turns the server off.
	Listen string
}

// Log is the logging section (log.*).
type Log struct {
	// Level is the least severe level logged (log.level); it is reloaded
	// while the daemon runs.
	Level slog.Level
	// Format is "text" or "json" (log.format).
	Format string
}

// Default metrics.listen of each daemon: they differ so that a relay and a
// broker can run on one host.
const (
	DefaultRelayMetricsListen  = "127.0.0.1:9464"
	DefaultBrokerMetricsListen = "127.0.0.1:9465"
)

func dbKeys(dsnDefault string) []key {
	return []key{
		{"db.dsn", "dsn", dsnDefault, "MySQL/MariaDB DSN, user:pass@tcp(host:3306)/db"},
		{"db.max_open_conns", "db.max_open_conns", "32", "most open database connections"},
		{"db.connect_timeout", "db.connect_timeout", "5s", "timeout of the first database connection"},
	}
}

func kafkaKeys() []key {
	return []key{
		{"kafka.brokers", "brokers", "", "Kafka bootstrap brokers, HOST:PORT[,HOST:PORT...]"},
		{"kafka.dial_timeout", "kafka.dial_timeout", "5s", "timeout of the broker reachability check at start-up"},
		{"kafka.batch_timeout", "kafka.batch_timeout", "1ms", "how long a partial produce batch waits"},
		{"kafka.write_timeout", "kafka.write_timeout", "10s", "timeout of one produce request"},
	}
}

func metricsKeys(listen string) []key {
	return []key{
		{"metrics.listen", "metrics.listen", listen, "address of /healthz, /readyz and /metrics; empty disables"},
	}
}

func logKeys() []key {
	return []key{
		{"log.level", "log.level", "info", "log level: debug, info, warn or error (reloaded while running)"},
		{"log.format", "log.format", "text", "log format: text or json"},
	}
}

func (r *reader) db() DB {
	d := DB{
		MaxOpenConns:   r.integer("db.max_open_conns", 1, 10000),
		ConnectTimeout: r.duration("db.connect_timeout", time.Millisecond),
	}
	raw := r.str("db.dsn")
	if raw == "" {
		r.fail("db.dsn", raw, "required (flag --dsn, env TXMSG_DB_DSN)")
		return d
	}
	cfg, err := mysql.ParseDSN(raw)
	if err != nil {
		r.fail("db.dsn", MaskDSN(raw), "want user:pass@tcp(host:3306)/dbname: "+err.Error())
		return d
	}
	if cfg.DBName == "" {
		r.fail("db.dsn", MaskDSN(raw), "names no database: want user:pass@tcp(host:3306)/dbname")
		return d
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	d.DSN = cfg.FormatDSN()
	d.Addr = cfg.Addr
	return d
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

func (r *reader) kafka() Kafka {
	k := Kafka{
		Brokers:      r.list("kafka.brokers"),
		DialTimeout:  r.duration("kafka.dial_timeout", time.Millisecond),
		BatchTimeout: r.duration("kafka.batch_timeout", time.Microsecond),
		WriteTimeout: r.duration("kafka.write_timeout", time.Millisecond),
	}
	if len(k.Brokers) == 0 {
		r.fail("kafka.brokers", "", "required (flag --brokers, env TXMSG_KAFKA_BROKERS)")
	} else if err := kafkax.CheckBrokers(k.Brokers); err != nil {
		r.fail("kafka.brokers", strings.Join(k.Brokers, ","), err.Error())
	}
	return k
}

func (r *reader) metrics() Metrics {
	m := Metrics{Listen: r.str("metrics.listen")}
	if m.Listen != "" {
		if _, _, err := net.SplitHostPort(m.Listen); err != nil {
			r.fail("metrics.listen", m.Listen, "want HOST:PORT, or empty to disable")
		}
	}
	return m
}

func (r *reader) log() Log {
	var lv slog.Level
	level := r.oneOf("log.level", "info", "debug", "warn", "error")
	// UnmarshalText accepts every value oneOf lets through.
	_ = lv.UnmarshalText([]byte(level))
	return Log{Level: lv, Format: r.oneOf("log.format", "text", "json")}
}
