package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"

	"github.com/txmsg/txmsg/broker"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/config"
)

const halfSynopsis = `half list [--state S] [--group G] [--limit N] | half resolve ID commit|rollback [--reason TEXT]

  list     list half messages in the order they were prepared
  resolve  an operator's decision on a prepared or discarded message:
           commit delivers it, rollback drops it (idempotent)`

// halfFunc is one half action, its arguments checked.
type halfFunc func(ctx context.Context, store *broker.Store, w io.Writer) error

func runHalf(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("half", halfSynopsis, e)
	loader := config.NewAdmin(fs)
	var f halfFlags
	fs.StringVar(&f.state, "state", "", "list: only messages in this state (prepared, committed, delivered, rolled_back, discarded, dead)")
	fs.StringVar(&f.group, "group", "", "list: only messages of this producer group")
	fs.IntVar(&f.limit, "limit", 100, "list: most messages shown")
	fs.StringVar(&f.reason, "reason", "", "resolve: why, stored with the message")
	if err := parse(fs, args); err != nil {
		return err
	}
	action, err := halfAction(fs.Args(), f)
	if err != nil {
		return err
	}
	cfg, err := loader.Load()
	if err != nil {
		return err
	}
	db, err := openDB(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	// The store's audit log of the resolution goes to stderr.
	var level slog.LevelVar
	store, err := broker.NewStore(db, broker.WithStoreLogger(newLogger(e.stderr, cfg.Log, &level)))
	if err != nil {
		return err
	}
	return action(ctx, store, e.stdout)
}

// halfFlags are the half command's flags.
type halfFlags struct {
	state, group, reason string
	limit                int
}

// halfAction checks the action and its arguments before anything connects.
func halfAction(args []string, f halfFlags) (halfFunc, error) {
	if len(args) == 0 {
		return nil, usagef("missing action: list or resolve")
	}
	action, rest := args[0], args[1:]
	switch action {
	case "list":
		filter, err := halfFilter(rest, f)
		return func(ctx context.Context, store *broker.Store, w io.Writer) error {
			return halfList(ctx, store, w, filter)
		}, err
	case "resolve":
		if len(rest) != 2 {
			return nil, usagef("resolve: want ID commit|rollback")
		}
		id, decision := rest[0], rest[1]
		if decision != "commit" && decision != "rollback" {
			return nil, usagef("resolve: decision %q: want commit or rollback", decision)
		}
		return func(ctx context.Context, store *broker.Store, w io.Writer) error {
			st, err := store.ResolveAs(ctx, broker.Actor{Name: "operator (txmsg half)"}, id, decision == "commit", f.reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%s is %s\n", id, st)
			return nil
		}, nil
	default:
		return nil, usagef("unknown action %q: want list or resolve", action)
	}
}

// halfFilter checks list's arguments and flags.
func halfFilter(rest []string, f halfFlags) (halfmsg.Filter, error) {
	if len(rest) > 0 {
		return halfmsg.Filter{}, usagef("list: unexpected argument %q", rest[0])
	}
	if f.limit < 1 || f.limit > halfmsg.MaxListLimit {
		return halfmsg.Filter{}, usagef("--limit %d: want 1 to %d", f.limit, halfmsg.MaxListLimit)
	}
	filter := halfmsg.Filter{ProducerGroup: f.group, Limit: f.limit}
	if f.state != "" {
		st, err := halfmsg.ParseState(f.state)
		if err != nil {
			return halfmsg.Filter{}, usageError{err}
		}
		filter.State = st
	}
	return filter, nil
}

func halfList(ctx context.Context, store *broker.Store, w io.Writer, filter halfmsg.Filter) error {
	msgs, _, err := store.List(ctx, filter)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tGROUP\tTOPIC\tKEY\tSTATE\tCHECKS\tCREATED_AT\tNOTE")
	for _, m := range msgs {
		note := m.Reason
		if note == "" {
			note = m.LastCheckError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", m.ID, m.ProducerGroup, m.Topic, printable(m.Key), m.State,
			m.CheckCount, m.MaxChecks, m.CreatedAt.UTC().Format("2006-01-02 15:04:05"), strings.ReplaceAll(note, "\n", " "))
	}
	return tw.Flush()
}
