package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/migrations"
)

const migrateSynopsis = `migrate up|down [N]|status|force V [--dsn DSN] [--config FILE]

  up       apply every migration not yet applied (a no-op when current)
  down [N] revert the last N applied migrations (default 1; --all for every one);
           refused while it would drop data (pending messages, inbox rows,
           group credentials...) unless --discard-data
  status   list the migrations and whether each is applied
  force V  after repairing a migration that failed half way by hand, mark
           version V cleanly applied (--unapplied: V and every later version
           as never applied)`

// migrateFunc is one migrate action, its arguments checked.
type migrateFunc func(ctx context.Context, m *migrations.Migrator, w io.Writer) error

func runMigrate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("migrate", migrateSynopsis, e)
	loader := config.NewAdmin(fs)
	all := fs.Bool("all", false, "down: revert every applied migration")
	unapplied := fs.Bool("unapplied", false, "force: mark the version as never applied")
	discard := fs.Bool("discard-data", false, "down: revert also migrations whose down files drop data")
	if err := parse(fs, args); err != nil {
		return err
	}
	action, err := migrateAction(fs.Args(), *all, *unapplied, *discard)
	if err != nil {
		return err
	}
	m, err := openMigrator(ctx, loader)
	if err != nil {
		return err
	}
	defer m.Close()
	return action(ctx, m, e.stdout)
}

// migrateAction checks the action and its arguments before anything
// connects.
func migrateAction(args []string, all, unapplied, discard bool) (migrateFunc, error) {
	if len(args) == 0 {
		return nil, usagef("missing action: up, down, status or force")
	}
	action, rest := args[0], args[1:]
	switch action {
	case "up", "status":
		if len(rest) > 0 {
			return nil, usagef("%s: unexpected argument %q", action, rest[0])
		}
		if action == "up" {
			return migrateUp, nil
		}
		return migrateStatus, nil
	case "down":
		steps, err := downSteps(rest, all)
		return func(ctx context.Context, m *migrations.Migrator, w io.Writer) error {
			return migrateDown(ctx, m, w, steps, discard)
		}, err
	case "force":
		if len(rest) != 1 {
			return nil, usagef("force: give one version")
		}
		v, err := strconv.Atoi(rest[0])
		if err != nil || v < 1 {
			return nil, usagef("force: version %q: want a positive number", rest[0])
		}
		return func(ctx context.Context, m *migrations.Migrator, w io.Writer) error {
			return migrateForce(ctx, m, w, v, !unapplied)
		}, nil
	default:
		return nil, usagef("unknown action %q: want up, down, status or force", action)
	}
}

// downSteps reads down's N or --all: how many migrations to revert, 0 for
// every one.
func downSteps(rest []string, all bool) (int, error) {
	switch {
	case len(rest) > 1:
		return 0, usagef("down: unexpected argument %q", rest[1])
	case len(rest) == 1 && all:
		return 0, usagef("down: give N or --all, not both")
	case len(rest) == 1:
		n, err := strconv.Atoi(rest[0])
		if err != nil || n < 1 {
			return 0, usagef("down: N %q: want a positive number", rest[0])
		}
		return n, nil
	case all:
		return 0, nil
	default:
		return 1, nil
	}
}

// openMigrator loads a one-shot command's configuration, checks that its
// database answers (so that a bad address fails with its name), and returns
// a Migrator on it.
func openMigrator(ctx context.Context, loader *config.Loader[config.Admin]) (*migrations.Migrator, error) {
	cfg, err := loader.Load()
	if err != nil {
		return nil, err
	}
	db, err := openDB(ctx, cfg.DB)
	if err != nil {
		return nil, err
	}
	db.Close()
	return migrations.New(cfg.DB.DSN)
}

func migrateUp(ctx context.Context, m *migrations.Migrator, w io.Writer) error {
	done, err := m.Up(ctx)
	for _, mig := range done {
		fmt.Fprintf(w, "applied %s\n", mig)
	}
	if err == nil && len(done) == 0 {
		fmt.Fprintln(w, "schema is up to date")
	}
	return err
}

func migrateDown(ctx context.Context, m *migrations.Migrator, w io.Writer, steps int, discard bool) error {
	var opts []migrations.DownOption
	if discard {
		opts = append(opts, migrations.DiscardData())
	}
	done, err := m.Down(ctx, steps, opts...)
	for _, mig := range done {
		fmt.Fprintf(w, "reverted %s\n", mig)
	}
	if err == nil && len(done) == 0 {
		fmt.Fprintln(w, "nothing to revert")
	}
	return err
}

func migrateStatus(ctx context.Context, m *migrations.Migrator, w io.Writer) error {
	st, err := m.Status(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tNAME\tSTATE")
	for _, s := range st {
		state := "pending"
		switch {
		case s.Dirty:
			state = "dirty"
		case s.Applied:
			state = "applied"
		}
		fmt.Fprintf(tw, "%04d\t%s\t%s\n", s.Version, s.Name, state)
	}
	return tw.Flush()
}

func migrateForce(ctx context.Context, m *migrations.Migrator, w io.Writer, version int, applied bool) error {
	if err := m.Force(ctx, version, applied); err != nil {
		return err
	}
	state := "applied"
	if !applied {
		state = "not applied"
	}
	fmt.Fprintf(w, "version %04d marked %s\n", version, state)
	return nil
}
