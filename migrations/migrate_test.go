package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-migrate/migrate/v4/database"

	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/migrations"
)

// newMigrator returns a Migrator on d, closed when the test ends.
func newMigrator(t *testing.T, d *testenv.Database) *migrations.Migrator {
	t.Helper()
	m, err := migrations.New(d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// countTables counts d's txmsg_ tables other than the version table.
func countTables(t *testing.T, d *testenv.Database) int {
	t.Helper()
	var n int
	if err := d.DB.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name LIKE 'txmsg\\_%' AND table_name <> 'txmsg_schema_migrations'", d.Name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrationsUpIsIdempotentAndDownReverts(t *testing.T) {
	t.Parallel()
	d := testenv.NewEmptyDB(t)
	ctx := context.Background()
	m := newMigrator(t, d)
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	applied, err := m.Up(ctx)
	if err != nil || len(applied) != len(all) || applied[0] != all[0] {
		t.Fatalf("first Up applied %v of %d: %v", applied, len(all), err)
	}
	again, err := m.Up(ctx)
	if err != nil || len(again) != 0 {
		t.Fatalf("second Up applied %d: %v; want a no-op", len(again), err)
	}
	st, err := m.Status(ctx)
	if err != nil || len(st) != len(all) {
		t.Fatalf("Status = %v, %v", st, err)
	}
	for _, s := range st {
		if !s.Applied || s.Dirty {
			t.Errorf("version %d: applied %v dirty %v", s.Version, s.Applied, s.Dirty)
		}
	}
	if n := countTables(t, d); n < 5 {
		t.Fatalf("%d txmsg_ tables after Up", n)
	}
	reverted, err := m.Down(ctx, 1)
	if err != nil || len(reverted) != 1 || reverted[0] != all[len(all)-1] {
		t.Fatalf("Down(1) reverted %v: %v", reverted, err)
	}
	if st, err := m.Status(ctx); err != nil || st[len(st)-1].Applied || !st[0].Applied {
		t.Fatalf("Status after Down(1) = %v, %v", st, err)
	}
	if reverted, err := m.Down(ctx, 0); err != nil || len(reverted) != len(all)-1 || reverted[len(reverted)-1] != all[0] {
		t.Fatalf("Down(all) reverted %v: %v", reverted, err)
	}
	if n := countTables(t, d); n != 0 {
		t.Fatalf("%d txmsg_ tables left after Down all", n)
	}
	if reverted, err := m.Down(ctx, 1); err != nil || len(reverted) != 0 {
		t.Fatalf("Down on an empty schema reverted %v: %v", reverted, err)
	}
	if applied, err := m.Up(ctx); err != nil || len(applied) != len(all) {
		t.Fatalf("Up after Down applied %d: %v", len(applied), err)
	}
}

// A migration that failed half way blocks Up and Down until an operator has
// repaired the schema and forced the version.
func TestMigrationsDirtyBlocksUntilForced(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	m := newMigrator(t, d)
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	last := all[len(all)-1].Version
	if _, err := d.DB.Exec("UPDATE txmsg_schema_migrations SET dirty = TRUE"); err != nil {
		t.Fatal(err)
	}
	force := fmt.Sprintf("migrate force %d", last)
	if _, err := m.Up(ctx); !errors.Is(err, migrations.ErrDirty) || !strings.Contains(err.Error(), force) {
		t.Fatalf("Up on a dirty schema = %v, want ErrDirty naming %q", err, force)
	}
	if _, err := m.Down(ctx, 1); !errors.Is(err, migrations.ErrDirty) {
		t.Fatalf("Down on a dirty schema = %v, want ErrDirty", err)
	}
	if err := migrations.Check(ctx, d.DB); !errors.Is(err, migrations.ErrDirty) || !strings.Contains(err.Error(), force) {
		t.Fatalf("Check on a dirty schema = %v, want ErrDirty naming %q", err, force)
	}
	if err := m.Force(ctx, last, true); err != nil {
		t.Fatalf("Force: %v", err)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("Up after Force: %v", err)
	}
	st, err := m.Status(ctx)
	if err != nil || st[len(st)-1].Dirty || !st[len(st)-1].Applied {
		t.Fatalf("version %d after Force: %+v (%v)", last, st, err)
	}
	if err := m.Force(ctx, last+1000, true); err == nil {
		t.Error("Force accepted a version that has no migration")
	}
	if err := m.Force(ctx, all[0].Version, false); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(ctx); err != nil || st[0].Applied || st[len(st)-1].Applied {
		t.Fatalf("after Force(first, unapplied): %+v (%v)", st, err)
	}
}

// Check tells a daemon what to run: nothing, up (nothing applied, or some
// migrations missing).
func TestMigrationsCheck(t *testing.T) {
	t.Parallel()
	d := testenv.NewEmptyDB(t)
	ctx := context.Background()
	if err := migrations.Check(ctx, d.DB); !errors.Is(err, migrations.ErrNoSchema) {
		t.Fatalf("Check on an empty database = %v, want ErrNoSchema", err)
	}
	m := newMigrator(t, d)
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if err := migrations.Check(ctx, d.DB); err != nil {
		t.Fatalf("Check after Up = %v", err)
	}
	reverted, err := m.Down(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Check(ctx, d.DB); !errors.Is(err, migrations.ErrPending) || !strings.Contains(err.Error(), reverted[0].String()) {
		t.Fatalf("Check after Down(1) = %v, want ErrPending naming %s", err, reverted[0])
	}
}

// golang-migrate runs each file in one call, so a semicolon at the end of a
// line inside a string stays in the string (a line-based splitter cut the
// statement there); a failing file names itself and leaves its version
// dirty.
func TestMigrationsRunWholeFiles(t *testing.T) {
	t.Parallel()
	d := testenv.NewEmptyDB(t)
	ctx := context.Background()
	fsys := fstest.MapFS{
		"0001_quote.up.sql": {Data: []byte("CREATE TABLE txmsg_q (s VARCHAR(20));\n" +
			"INSERT INTO txmsg_q VALUES ('a;\nb;');\n")},
		"0001_quote.down.sql": {Data: []byte("DROP TABLE txmsg_q;\n")},
		"0002_bad.up.sql":     {Data: []byte("CREATE TABLE txmsg_b (x INT);\nSELECT * FROM no_such_table;\n")},
		"0002_bad.down.sql":   {Data: []byte("DROP TABLE txmsg_b;\n")},
		"README.md":           {Data: []byte("not a migration")},
	}
	m, err := migrations.NewFromFS(d.DSN, fsys)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	applied, err := m.Up(ctx)
	if len(applied) != 1 || applied[0].String() != "0001_quote" {
		t.Errorf("Up applied %v, want 0001_quote", applied)
	}
	if err == nil || !strings.Contains(err.Error(), "up 0002_bad") || !strings.Contains(err.Error(), "no_such_table") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Up = %v, want a one-line error naming 0002_bad and the missing table", err)
	}
	var s string
	if err := d.DB.QueryRow("SELECT s FROM txmsg_q").Scan(&s); err != nil || s != "a;\nb;" {
		t.Fatalf("txmsg_q holds %q (%v), want %q", s, err, "a;\nb;")
	}
	st, err := m.Status(ctx)
	if err != nil || !st[0].Applied || !st[1].Dirty {
		t.Fatalf("Status after the failure = %+v (%v), want 0001 applied and 0002 dirty", st, err)
	}
}

// When ctx ends, Up stops before the next migration and says why.
func TestMigrationsUpStopsWithContext(t *testing.T) {
	t.Parallel()
	d := testenv.NewEmptyDB(t)
	fsys := fstest.MapFS{
		"0001_slow.up.sql":    {Data: []byte("DO SLEEP(2);\n")},
		"0001_slow.down.sql":  {Data: []byte("DO 0;\n")},
		"0002_after.up.sql":   {Data: []byte("CREATE TABLE txmsg_after (x INT);\n")},
		"0002_after.down.sql": {Data: []byte("DROP TABLE txmsg_after;\n")},
	}
	m, err := migrations.NewFromFS(d.DSN, fsys)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	applied, err := m.Up(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || len(applied) > 1 {
		t.Fatalf("Up = %v, %v; want at most 0001 applied and the context's error", applied, err)
	}
	st, err := m.Status(context.Background())
	if err != nil || st[1].Applied {
		t.Fatalf("Status after the stop = %+v (%v), want 0002 not applied", st, err)
	}
}

// A database migrated by txmsg's own migrator (before golang-migrate: one row
// per version, with applied_at) keeps its state: Up applies only the newer
// migrations, and a dirty version stays dirty.
func TestMigrationsLegacyVersionTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		rows  int  // versions 1..rows recorded, and their files applied
		dirty bool // the last recorded version is dirty
	}{
		{"three applied", 3, false},
		{"one applied", 1, false},
		{"none applied", 0, false},
		{"dirty", 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := testenv.NewEmptyDB(t)
			ctx := context.Background()
			legacyMigrate(t, d, tt.rows, tt.dirty)
			m := newMigrator(t, d)
			applied, err := m.Up(ctx)
			if tt.dirty {
				if !errors.Is(err, migrations.ErrDirty) || !strings.Contains(err.Error(), fmt.Sprintf("migrate force %d", tt.rows)) {
					t.Fatalf("Up on a legacy dirty schema = %v, want ErrDirty naming version %d", err, tt.rows)
				}
				return
			}
			if err != nil {
				t.Fatalf("Up: %v", err)
			}
			for _, mig := range applied {
				if mig.Version <= tt.rows {
					t.Errorf("Up applied %s again", mig)
				}
			}
			if err := migrations.Check(ctx, d.DB); err != nil {
				t.Errorf("Check after Up: %v", err)
			}
			var n int
			if err := d.DB.QueryRow("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name LIKE 'txmsg\\_schema\\_migrations\\_%'", d.Name).Scan(&n); err != nil || n != 0 {
				t.Errorf("%d conversion tables left (%v)", n, err)
			}
			if tt.rows > 0 {
				if err := d.DB.QueryRow("SELECT COUNT(*) FROM txmsg_outbox").Scan(&n); err != nil || n != 1 {
					t.Errorf("txmsg_outbox holds %d rows (%v), want the one written before Up", n, err)
				}
			}
		})
	}
}

// legacyMigrate applies the embedded migrations 1..upTo by hand and records
// them as txmsg's migrator before golang-migrate did, the last one dirty if
// asked; it writes one outbox row when the outbox exists.
func legacyMigrate(t *testing.T, d *testenv.Database, upTo int, dirty bool) {
	t.Helper()
	cfg, err := mysql.ParseDSN(d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MultiStatements = true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	exec(`CREATE TABLE txmsg_schema_migrations (
  version    INT         NOT NULL,
  dirty      BOOLEAN     NOT NULL,
  applied_at DATETIME(6) NOT NULL,
  PRIMARY KEY (version)
) ENGINE=InnoDB`)
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	for _, mig := range all[:upTo] {
		body, err := fs.ReadFile(migrations.FS(), mig.String()+".up.sql")
		if err != nil {
			t.Fatal(err)
		}
		exec(string(body))
		exec(`INSERT INTO txmsg_schema_migrations VALUES (?, ?, UTC_TIMESTAMP(6))`, mig.Version, dirty && mig.Version == upTo)
	}
	if upTo > 0 {
		exec(`INSERT INTO txmsg_outbox (id, shard, topic, value, created_at) VALUES ('legacy', 0, 't', 'v', UTC_TIMESTAMP(6))`)
	}
}

// Migration 0004 applies to a database at version 3 that holds rows, keeps
// them, and makes ids, groups and topics compare byte for byte, with ids
// unique per topic.
func TestMigrations0004OnVersion3(t *testing.T) {
	t.Parallel()
	d := testenv.NewEmptyDB(t)
	ctx := context.Background()
	m, err := migrations.New(d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
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
	if err != nil || len(applied) == 0 || applied[0].Version != 4 {
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
	// The same id in the same topic (and group) stays unique; dead letters
	// may repeat one since 0006.
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{outbox, []any{"Order-1", "orders"}},
		{half, []any{"Order-1", "Shop2", "orders"}},
		{group, []any{"Shop2"}},
		{ledger, []any{"Order-1"}},
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

// A migrator waits for another's lock longer than golang-migrate's 10s per
// try, so that the replicas of a deployment migrating at start wait for the
// one that migrates instead of failing.
func TestMigrationsWaitForAnotherMigratorsLock(t *testing.T) {
	t.Parallel()
	d := testenv.NewEmptyDB(t)
	id, err := database.GenerateAdvisoryLockId(d.Name + ":" + migrations.VersionTable)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	holder, err := d.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	var got int
	if err := holder.QueryRowContext(ctx, "SELECT GET_LOCK(?, 10)", id).Scan(&got); err != nil || got != 1 {
		t.Fatalf("take the migrations lock: %d %v", got, err)
	}
	release := time.AfterFunc(12*time.Second, func() {
		_, _ = holder.ExecContext(ctx, "SELECT RELEASE_LOCK(?)", id)
	})
	defer release.Stop()
	m := newMigrator(t, d)
	start := time.Now()
	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("Up while another migrator held the lock for 12s: %v", err)
	}
	if waited := time.Since(start); waited < 11*time.Second {
		t.Fatalf("Up took %v: it did not wait for the lock", waited)
	}
}

// Down refuses to drop data, saying what and how much, unless told to
// discard it; an empty schema reverts without asking.
func TestMigrationsDownRefusesToDiscardData(t *testing.T) {
	t.Parallel()
	d := testenv.NewEmptyDB(t)
	m := newMigrator(t, d)
	ctx := context.Background()
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.DB.ExecContext(ctx, `INSERT INTO txmsg_outbox (id, shard, topic, value, created_at) VALUES ('a', 0, 't', 'v', UTC_TIMESTAMP(6))`); err != nil {
		t.Fatal(err)
	}
	// The last migrations drop nothing held here: they revert.
	if done, err := m.Down(ctx, 2); err != nil || len(done) != 2 {
		t.Fatalf("Down 2 with only an outbox row: %v %v", done, err)
	}
	done, err := m.Down(ctx, 0)
	if !errors.Is(err, migrations.ErrDataLoss) || !strings.Contains(err.Error(), "1 messages pending in txmsg_outbox (0001)") || len(done) != 0 {
		t.Fatalf("Down all with a pending message: %v %v; want ErrDataLoss naming it, nothing reverted", done, err)
	}
	if n := countTables(t, d); n < 5 {
		t.Fatalf("%d tables left after a refused Down", n)
	}
	if _, err := m.Down(ctx, 0, migrations.DiscardData()); err != nil {
		t.Fatal(err)
	}
	if n := countTables(t, d); n != 0 {
		t.Fatalf("%d tables left after Down with DiscardData", n)
	}
}
