package migrations_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/migrations"
)

func TestMigrationsUpIsIdempotentAndDownReverts(t *testing.T) {
	t.Parallel()
	d := testenv.NewEmptyDB(t)
	ctx := context.Background()
	m, err := migrations.New(d.DB)
	if err != nil {
		t.Fatal(err)
	}
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	applied, err := m.Up(ctx)
	if err != nil || len(applied) != len(all) {
		t.Fatalf("first Up applied %d of %d: %v", len(applied), len(all), err)
	}
	again, err := m.Up(ctx)
	if err != nil || len(again) != 0 {
		t.Fatalf("second Up applied %d: %v; want a no-op", len(again), err)
	}
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied || s.Dirty {
			t.Errorf("version %d: applied %v dirty %v", s.Version, s.Applied, s.Dirty)
		}
	}
	var n int
	if err := d.DB.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name LIKE 'txmsg\\_%'", d.Name).Scan(&n); err != nil || n < 5 {
		t.Fatalf("%d txmsg_ tables after Up (%v)", n, err)
	}
	reverted, err := m.Down(ctx, 1)
	if err != nil || len(reverted) != 1 || reverted[0].Version != all[len(all)-1].Version {
		t.Fatalf("Down(1) reverted %v: %v", reverted, err)
	}
	if _, err := m.Down(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.DB.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name LIKE 'txmsg\\_%' AND table_name <> 'txmsg_schema_migrations'", d.Name).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d txmsg_ tables left after Down all (%v)", n, err)
	}
	if applied, err := m.Up(ctx); err != nil || len(applied) != len(all) {
		t.Fatalf("Up after Down applied %d: %v", len(applied), err)
	}
}

func TestMigrationsStatements(t *testing.T) {
	got := migrations.Statements("-- c\nCREATE TABLE a (x INT);\n\nDROP TABLE b;\nSELECT 1")
	if len(got) != 3 || got[0] != "CREATE TABLE a (x INT)" || got[1] != "DROP TABLE b" || got[2] != "SELECT 1" {
		t.Fatalf("Statements = %q", got)
	}
}

// A migration that failed half way blocks Up and Down until an operator has
// repaired the schema and forced the version.
func TestMigrationsDirtyBlocksUntilForced(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	m, err := migrations.New(d.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.DB.Exec("UPDATE txmsg_schema_migrations SET dirty = TRUE WHERE version = 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(ctx); !errors.Is(err, migrations.ErrDirty) || !strings.Contains(err.Error(), "migrate force 1") {
		t.Fatalf("Up on a dirty schema = %v, want ErrDirty naming the force command", err)
	}
	if err := m.Force(ctx, 1, true); err != nil {
		t.Fatalf("Force: %v", err)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("Up after Force: %v", err)
	}
	st, err := m.Status(ctx)
	if err != nil || st[0].Dirty || !st[0].Applied {
		t.Fatalf("version 1 after Force: %+v (%v)", st[0], err)
	}
}

// Migration 0004 applies to a database at version 3 that holds rows, keeps
// them, and makes ids, groups and topics compare byte for byte, with ids
// unique per topic.
func TestMigrations0004OnVersion3(t *testing.T) {
	t.Parallel()
	d := testenv.NewEmptyDB(t)
	ctx := context.Background()
	m, err := migrations.New(d.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := m.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if top := lastApplied(st); top <= 3 {
			if top != 3 {
				t.Fatalf("at version %d, want 3", top)
			}
			break
		}
		if _, err := m.Down(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	exec := func(q string, args ...any) error {
		_, err := d.DB.ExecContext(ctx, q, args...)
		return err
	}
	must := func(q string, args ...any) {
		t.Helper()
		if err := exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	outbox := `INSERT INTO txmsg_outbox (id, shard, topic, msg_key, value, created_at) VALUES (?, 0, ?, 'k', 'v', UTC_TIMESTAMP(6))`
	half := `INSERT INTO txmsg_half_messages (id, shard, state, producer_group, topic, msg_key, value, check_timeout_ms,
  max_checks, next_check_at, created_at, updated_at)
VALUES (?, 0, 1, ?, ?, 'k', 'v', 1000, 3, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))`
	group := `INSERT INTO txmsg_producer_groups (producer_group, checkback_url, updated_at) VALUES (?, 'http://x/', UTC_TIMESTAMP(6))`
	ledger := `INSERT INTO txmsg_checkback_ledger (msg_id, state, created_at) VALUES (?, 1, UTC_TIMESTAMP(6))`
	dead := `INSERT INTO txmsg_dead_letters (id, source, shard, topic, value, created_at, attempts, last_error, dead_at)
VALUES (?, ?, 0, ?, 'v', UTC_TIMESTAMP(6), 1, 'e', UTC_TIMESTAMP(6))`
	inbox := `INSERT INTO txmsg_inbox (consumer_group, msg_id, topic, kafka_partition, kafka_offset, processed_at)
VALUES ('g', ?, ?, 0, 0, UTC_TIMESTAMP(6))`
	must(outbox, "Order-1", "orders")
	must(half, "Order-1", "Shop2", "orders")
	must(group, "Shop2")
	must(ledger, "Order-1")
	must(dead, "Order-1", "outbox", "orders")
	must(inbox, "Order-1", "orders")

	applied, err := m.Up(ctx)
	if err != nil || len(applied) != 1 || applied[0].Version != 4 {
		t.Fatalf("Up at version 3 applied %v: %v", applied, err)
	}
	var order int
	if err := d.DB.QueryRowContext(ctx, `SELECT delivery_order FROM txmsg_producer_groups WHERE producer_group = 'Shop2'`).Scan(&order); err != nil || order != 1 {
		t.Fatalf("group Shop2 after 0004: order %d (%v), want 1 (prepare)", order, err)
	}
	// Case matters, and one id may live in several topics.
	must(outbox, "order-1", "orders")
	must(outbox, "Order-1", "payments")
	must(half, "order-1", "Shop2", "orders")
	must(half, "Order-1", "Shop2", "payments")
	must(group, "shop2")
	must(ledger, "order-1")
	must(dead, "Order-1", "half", "orders")
	must(dead, "Order-1", "outbox", "payments")
	must(inbox, "Order-1", "payments")
	must(inbox, "order-1", "orders")
	// The same id in the same topic (and source, and group) stays unique.
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{outbox, []any{"Order-1", "orders"}},
		{half, []any{"Order-1", "Shop2", "orders"}},
		{group, []any{"Shop2"}},
		{ledger, []any{"Order-1"}},
		{dead, []any{"Order-1", "outbox", "orders"}},
		{inbox, []any{"Order-1", "orders"}},
	} {
		if err := exec(q.sql, q.args...); err == nil || !strings.Contains(err.Error(), "Duplicate") {
			t.Errorf("%s %v again = %v, want a duplicate key", firstLine(q.sql), q.args, err)
		}
	}
	var n int
	if err := d.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM txmsg_outbox WHERE id = 'Order-1'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d outbox rows of Order-1 (%v), want 2", n, err)
	}
}

func lastApplied(st []migrations.Status) int {
	top := 0
	for _, s := range st {
		if s.Applied {
			top = max(top, s.Version)
		}
	}
	return top
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
