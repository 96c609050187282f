package mysqlx_test

import (
	"bytes"
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg/internal/sqlx/mysqlx"
	"github.com/txmsg/txmsg/internal/testenv"
)

// TestMysqlxInterpolate: interpolation is turned on unless the DSN names it
// or its collation is one the driver will not interpolate under, and the
// bytes and times written through it read back unchanged.
func TestMysqlxInterpolate(t *testing.T) {
	t.Parallel()
	for dsn, want := range map[string]bool{
		"u@tcp(h:3306)/db":                            true,
		"u@tcp(h:3306)/db?interpolateParams=false":    false,
		"u@tcp(h:3306)/db?collation=sjis_japanese_ci": false,
		"u@tcp(h:3306)/db?parseTime=true&loc=UTC":     true,
		"u@tcp(h:3306)/db?interpolateParams=true&x=1": true,
	} {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatal(err)
		}
		mysqlx.Interpolate(cfg, dsn)
		if cfg.InterpolateParams != want {
			t.Errorf("%s: InterpolateParams %t, want %t", dsn, cfg.InterpolateParams, want)
		}
	}

	d := testenv.NewDB(t)
	cfg, err := mysql.ParseDSN(d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	mysqlx.Interpolate(cfg, d.DSN)
	if !cfg.InterpolateParams {
		t.Fatalf("the test DSN %s did not turn interpolation on", d.DSN)
	}
	if err := mysqlx.Strict(cfg); err != nil {
		t.Fatal(err)
	}
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (id BIGINT UNSIGNED PRIMARY KEY, v LONGBLOB NOT NULL, s VARCHAR(64) NOT NULL, at DATETIME(6) NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	value := []byte("a'b\"c\\d\x00e?f\x1a\n\r\xff\xfe `g`")
	str := `it's a "?" \ é`
	at := time.Date(2026, 12, 1, 10, 11, 12, 123456000, time.UTC)
	const id = uint64(1<<63 + 5)
	if _, err := db.ExecContext(ctx, `INSERT INTO t (id, v, s, at) VALUES (?, ?, ?, ?)`, id, value, str, at); err != nil {
		t.Fatal(err)
	}
	var gotV []byte
	var gotS string
	var gotAt time.Time
	if err := db.QueryRowContext(ctx, `SELECT v, s, at FROM t WHERE id = ? AND v = ?`, id, value).Scan(&gotV, &gotS, &gotAt); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotV, value) || gotS != str || !gotAt.Equal(at) {
		t.Errorf("read back %q, %q, %v; wrote %q, %q, %v", gotV, gotS, gotAt, value, str, at)
	}
}
