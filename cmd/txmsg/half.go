package main

import (
	"context"
	"fmt"
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

func runHalf(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("half", halfSynopsis, e)
	loader := config.NewAdmin(fs)
	stateName := fs.String("state", "", "list: only messages in this state (prepared, committed, delivered, rolled_back, discarded, dead)")
	group := fs.String("group", "", "list: only messages of this producer group")
	limit := fs.Int("limit", 100, "list: most messages shown")
	reason := fs.String("reason", "", "resolve: why, stored with the message")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usagef("missing action: list or resolve")
	}
	action, rest := fs.Arg(0), fs.Args()[1:]
	var filter halfmsg.Filter
	var id string
	var commit bool
	switch action {
	case "list":
		if len(rest) > 0 {
			return usagef("list: unexpected argument %q", rest[0])
		}
		if *limit < 1 || *limit > halfmsg.MaxListLimit {
			return usagef("--limit %d: want 1 to %d", *limit, halfmsg.MaxListLimit)
		}
		filter = halfmsg.Filter{ProducerGroup: *group, Limit: *limit}
		if *stateName != "" {
			st, err := halfmsg.ParseState(*stateName)
			if err != nil {
				return usageError{err}
			}
			filter.State = st
		}
	case "resolve":
		if len(rest) != 2 {
			return usagef("resolve: want ID commit|rollback")
		}
		id = rest[0]
		switch rest[1] {
		case "commit":
			commit = true
		case "rollback":
		default:
			return usagef("resolve: decision %q: want commit or rollback", rest[1])
		}
	default:
		return usagef("unknown action %q: want list or resolve", action)
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
	if action == "resolve" {
		st, err := store.ResolveAs(ctx, broker.Actor{Name: "operator (txmsg half)"}, id, commit, *reason)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s is %s\n", id, st)
		return nil
	}
	msgs, _, err := store.List(ctx, filter)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
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
