package main

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/migrations"
)

const migrateSynopsis = `migrate up|down [N]|status|force V [--dsn DSN] [--config FILE]

  up       apply every migration not yet applied (a no-op when current)
  down [N] revert the last N applied migrations (default 1; --all for every one)
  status   list the migrations and whether each is applied
  force V  after repairing a migration that failed half way by hand, mark
           version V cleanly applied (--unapplied: as never applied)`

func runMigrate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("migrate", migrateSynopsis, e)
	loader := config.NewAdmin(fs)
	all := fs.Bool("all", false, "down: revert every applied migration")
	unapplied := fs.Bool("unapplied", false, "force: mark the version as never applied")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("missing action: up, down, status or force")
	}
	action, rest := fs.Arg(0), fs.Args()[1:]
	steps, version := 1, 0
	switch action {
	case "force":
		if len(rest) != 1 {
			return usagef("force: give one version")
		}
		v, err := strconv.Atoi(rest[0])
		if err != nil || v < 1 {
			return usagef("force: version %q: want a positive number", rest[0])
		}
		version = v
	case "up", "status":
		if len(rest) > 0 {
			return usagef("%s: unexpected argument %q", action, rest[0])
		}
	case "down":
		switch {
		case len(rest) > 1:
			return usagef("down: unexpected argument %q", rest[1])
		case len(rest) == 1 && *all:
			return usagef("down: give N or --all, not both")
		case len(rest) == 1:
			n, err := strconv.Atoi(rest[0])
			if err != nil || n < 1 {
				return usagef("down: N %q: want a positive number", rest[0])
			}
			steps = n
		case *all:
			steps = 0
		}
	default:
		return usagef("unknown action %q: want up, down, status or force", action)
	}
	db, err := openAdmin(ctx, loader)
	if err != nil {
		return err
	}
	defer db.Close()
	m, err := migrations.New(db)
	if err != nil {
		return err
	}
	switch action {
	case "force":
		if err := m.Force(ctx, version, !*unapplied); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "version %04d marked %s\n", version, map[bool]string{true: "not applied", false: "applied"}[*unapplied])
	case "up":
		done, err := m.Up(ctx)
		for _, mig := range done {
			fmt.Fprintf(e.stdout, "applied %04d_%s\n", mig.Version, mig.Name)
		}
		if err != nil {
			return err
		}
		if len(done) == 0 {
			fmt.Fprintln(e.stdout, "schema is up to date")
		}
	case "down":
		done, err := m.Down(ctx, steps)
		for _, mig := range done {
			fmt.Fprintf(e.stdout, "reverted %04d_%s\n", mig.Version, mig.Name)
		}
		if err != nil {
			return err
		}
		if len(done) == 0 {
			fmt.Fprintln(e.stdout, "nothing to revert")
		}
	case "status":
		st, err := m.Status(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tNAME\tSTATE\tAPPLIED_AT")
		for _, s := range st {
			state, at := "pending", "-"
			switch {
			case s.Dirty:
				state, at = "dirty", s.AppliedAt.UTC().Format("2006-01-02 15:04:05")
			case s.Applied:
				state, at = "applied", s.AppliedAt.UTC().Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(tw, "%04d\t%s\t%s\t%s\n", s.Version, s.Name, state, at)
		}
		return tw.Flush()
	}
	return nil
}
