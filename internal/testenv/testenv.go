// Package testenv gives integration tests their real parts: a fresh MariaDB or
// MySQL database per test (from TXMSG_TEST_MYSQL_DSN, migrated, dropped at the
// end) and a fresh in-process kfake Kafka cluster per test, spoken to over TCP.
//
// Without TXMSG_TEST_MYSQL_DSN a test that needs the database is skipped with a
// message, unless CI is set, where it fails.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/txmsg/txmsg/migrations"
)

// DSNEnv names the environment variable holding the test server's DSN.
const DSNEnv = "TXMSG_TEST_MYSQL_DSN"

// BaseDSN returns the configured DSN, skipping (or, under CI, failing) the
// test when it is unset.
func BaseDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(DSNEnv)
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set; CI needs a database (see README: make test)", DSNEnv)
		}
		t.Skipf("%s is not set: skipping a test that needs MariaDB/MySQL", DSNEnv)
	}
	return dsn
}

// Database is a fresh database for one test.
type Database struct {
	// DB is a pool on the fresh database.
	DB *sql.DB
	// DSN connects to the fresh database (for subprocesses and second pools).
	DSN string
	// Name is the database's name.
	Name string
}

// NewDB creates a fresh database with every migration applied; it is dropped
// when the test ends.
func NewDB(t testing.TB) *Database {
	t.Helper()
	d := NewEmptyDB(t)
	m, err := migrations.New(d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("testenv: migrate %s: %v", d.Name, err)
	}
	return d
}

// NewEmptyDB creates a fresh database with no tables; it is dropped when the
// test ends.
func NewEmptyDB(t testing.TB) *Database {
	t.Helper()
	base := BaseDSN(t)
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", DSNEnv, err)
	}
	admin, err := sql.Open("mysql", base)
	if err != nil {
		t.Fatalf("testenv: open: %v", err)
	}
	defer admin.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "txmsg_t_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() { dropDB(t, base, name) })
	cfg.DBName = name
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	dsn := cfg.FormatDSN()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatalf("testenv: open %s: %v", name, err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	t.Cleanup(func() { db.Close() })
	return &Database{DB: db, DSN: dsn, Name: name}
}

// dropDB drops database name. It first kills every other connection using
// it: a test that failed with a transaction open (or a goroutine still
// querying) would otherwise hold a metadata lock the DROP waits on forever.
func dropDB(t testing.TB, base, name string) {
	admin, err := sql.Open("mysql", base)
	if err != nil {
		t.Errorf("testenv: open for cleanup: %v", err)
		return
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := admin.QueryContext(ctx,
		`SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()`, name)
	if err != nil {
		t.Errorf("testenv: list connections of %s: %v", name, err)
		return
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err == nil {
			ids = append(ids, id)
		}
	}
	rows.Close()
	for _, id := range ids {
		// The connection may have ended meanwhile (error 1094): nothing to do.
		_, _ = admin.ExecContext(ctx, "KILL "+strconv.FormatInt(id, 10))
	}
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		t.Errorf("testenv: drop database %s: %v", name, err)
	}
}

// Kafka is an in-process kfake cluster listening on a loopback port.
type Kafka struct {
	Cluster *kfake.Cluster
	// Addrs are the brokers' HOST:PORT addresses.
	Addrs []string
}

// NewKafka starts a one-broker kfake cluster with partitions partitions per
// auto-created topic (6 when partitions <= 0); it is closed when the test ends.
func NewKafka(t testing.TB, partitions int, opts ...kfake.Opt) *Kafka {
	t.Helper()
	if partitions <= 0 {
		partitions = 6
	}
	all := append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(partitions),
		kfake.AllowAutoTopicCreation(),
		kfake.Ports(0),
	}, opts...)
	c, err := kfake.NewCluster(all...)
	if err != nil {
		t.Fatalf("testenv: start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &Kafka{Cluster: c, Addrs: c.ListenAddrs()}
}

// Eventually polls cond every 20ms until it returns nil or timeout passes,
// then fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		<-tick.C
	}
}

// Pool opens a second pool on d whose connections set the session
// variables of params ("autocommit=0", as the DSN takes them), checks that
// they took, and closes it when the test ends: for code that must behave
// whatever its pool's sessions are.
func (d *Database) Pool(t testing.TB, params ...string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", d.DSN+"&"+strings.Join(params, "&"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("testenv: pool with %v: %v", params, err)
	}
	return db
}

// ReadUncommittedPool is a Pool whose sessions run at READ UNCOMMITTED
// (transaction_isolation on MySQL 8 and MariaDB 11.1+, tx_isolation before).
func (d *Database) ReadUncommittedPool(t testing.TB) *sql.DB {
	t.Helper()
	name := "transaction_isolation"
	var level string
	if err := d.DB.QueryRow("SELECT @@transaction_isolation").Scan(&level); err != nil {
		name = "tx_isolation"
	}
	db := d.Pool(t, name+"=%27READ-UNCOMMITTED%27")
	if err := db.QueryRow("SELECT @@" + name).Scan(&level); err != nil || level != "READ-UNCOMMITTED" {
		t.Fatalf("testenv: pool isolation %q (%v), want READ-UNCOMMITTED", level, err)
	}
	return db
}

// HandlerReads sums the Handler_read counters of q's session (a *sql.Conn,
// a *sql.Tx, or a *sql.DB of one connection): the rows and index entries
// the statements run there read.
func HandlerReads(t testing.TB, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}) int64 {
	t.Helper()
	rows, err := q.QueryContext(context.Background(), `SHOW SESSION STATUS LIKE 'Handler_read%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var total int64
	for rows.Next() {
		var (
			name string
			v    int64
		)
		if err := rows.Scan(&name, &v); err != nil {
			t.Fatal(err)
		}
		total += v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}

// PagesAccessed runs query with args under ANALYZE FORMAT=JSON and returns
// the buffer pool pages InnoDB accessed for it: what a statement costs in
// the engine, counting the entries it steps over without returning them
// (delete-marked ones), which the Handler_read counters miss. It skips the
// test on a server that does not report them (MySQL, MariaDB before 10.9).
// A plan that reads no table counts 0: MIN and MAX read from an end of an
// index while the statement is optimized, where ANALYZE counts nothing.
func PagesAccessed(t testing.TB, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, query string, args ...any) int64 {
	t.Helper()
	ctx := context.Background()
	var plan string
	if err := q.QueryRowContext(ctx, "ANALYZE FORMAT=JSON "+query, args...).Scan(&plan); err != nil {
		var version string
		if q.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version) == nil && !strings.Contains(version, "MariaDB") {
			t.Skipf("testenv: ANALYZE FORMAT=JSON needs MariaDB (server %s): %v", version, err)
		}
		t.Fatalf("testenv: ANALYZE FORMAT=JSON %s: %v", query, err)
	}
	found := pagesAccessed.FindAllStringSubmatch(plan, -1)
	if len(found) == 0 && !strings.Contains(plan, "optimized away") && !strings.Contains(plan, "min/max row") {
		t.Skipf("testenv: the server reports no pages_accessed: %s", plan)
	}
	var total int64
	for _, m := range found {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			t.Fatalf("testenv: pages_accessed %q: %v", m[1], err)
		}
		total += n
	}
	return total
}

var pagesAccessed = regexp.MustCompile(`"pages_accessed":\s*(\d+)`)

// HoldReadView opens a read view on a connection of db and keeps it until
// the test ends: InnoDB's purge then keeps every row deleted or changed
// afterwards, as a busy server does while purge lags (a drain, a long
// transaction elsewhere).
func HoldReadView(t testing.TB, db *sql.DB) {
	t.Helper()
	ctx := context.Background()
	hold, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Close() })
	if _, err := hold.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = hold.ExecContext(ctx, "ROLLBACK") })
}
