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
