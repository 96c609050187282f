package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/internal/testenv"
)

// Every connection a daemon opens runs with a strict sql_mode, so a value too
// long for its column fails instead of being cut; a DSN that sets a lax
// sql_mode is refused, naming the setting.
func TestCmdDatabaseConnectionsAreStrict(t *testing.T) {
	t.Parallel()
	dsn := testenv.BaseDSN(t)
	ctx := context.Background()
	c := config.DB{DSN: dsn, Addr: "test", MaxOpenConns: 2, ConnectTimeout: 5 * time.Second}
	db, err := openDB(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for range 3 {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var mode string
		if err := conn.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if !strings.Contains(mode, "STRICT_ALL_TABLES") {
			t.Fatalf("connection sql_mode %q lacks STRICT_ALL_TABLES", mode)
		}
	}

	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	c.DSN = dsn + sep + "sql_mode=%27ANSI_QUOTES%27"
	if db, err := openDB(ctx, c); err == nil || !strings.Contains(err.Error(), "sql_mode") {
		if db != nil {
			db.Close()
		}
		t.Fatalf("openDB with a lax sql_mode = %v, want an error naming sql_mode", err)
	}
	c.DSN = dsn + sep + "sql_mode=%27STRICT_TRANS_TABLES%27"
	db2, err := openDB(ctx, c)
	if err != nil {
		t.Fatalf("openDB with a strict sql_mode of its own: %v", err)
	}
	db2.Close()
}
