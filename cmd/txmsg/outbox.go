package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/config"
	"github.com/txmsg/txmsg/relay"
)

const outboxSynopsis = `outbox dead list [--limit N] | outbox dead retry ID... | outbox dead retry --all

  dead list   list messages Kafka refused for good (oldest first)
  dead retry  move dead letters back to their source, to be relayed again`

// outboxFunc is one outbox action, its arguments checked.
type outboxFunc func(ctx context.Context, db *sql.DB, w io.Writer) error

func runOutbox(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("outbox", outboxSynopsis, e)
	loader := config.NewAdmin(fs)
	limit := fs.Int("limit", 100, "list: most dead letters shown")
	all := fs.Bool("all", false, "retry: every dead letter")
	if err := parse(fs, args); err != nil {
		return err
	}
	action, err := outboxAction(fs.Args(), *limit, *all)
	if err != nil {
		return err
	}
	db, err := openAdmin(ctx, loader)
	if err != nil {
		return err
	}
	defer db.Close()
	return action(ctx, db, e.stdout)
}

// outboxAction checks the action and its arguments before anything
// connects.
func outboxAction(args []string, limit int, all bool) (outboxFunc, error) {
	if len(args) < 2 || args[0] != "dead" {
		return nil, usagef("want 'outbox dead list' or 'outbox dead retry ID...|--all'")
	}
	action, ids := args[1], args[2:]
	switch {
	case action == "list" && len(ids) > 0:
		return nil, usagef("dead list: unexpected argument %q", ids[0])
	case action == "list" && limit < 1:
		return nil, usagef("--limit %d: want at least 1", limit)
	case action == "list":
		return func(ctx context.Context, db *sql.DB, w io.Writer) error { return listDead(ctx, db, w, limit) }, nil
	case action == "retry" && all == (len(ids) > 0):
		return nil, usagef("dead retry: give message ids or --all")
	case action == "retry" && all:
		return retryAllDead, nil
	case action == "retry":
		return func(ctx context.Context, db *sql.DB, w io.Writer) error { return retryDead(ctx, db, w, ids) }, nil
	default:
		return nil, usagef("unknown action %q: want list or retry", action)
	}
}

func listDead(ctx context.Context, db *sql.DB, w io.Writer, limit int) error {
	dead, err := relay.ListDead(ctx, db, limit)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tTOPIC\tKEY\tATTEMPTS\tDEAD_AT\tERROR")
	for _, d := range dead {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Source, d.Topic, printable(d.Key),
			d.Attempts, d.DeadAt.UTC().Format("2006-01-02 15:04:05"), strings.ReplaceAll(d.LastError, "\n", " "))
	}
	return tw.Flush()
}

func retryAllDead(ctx context.Context, db *sql.DB, w io.Writer) error {
	n, err := relay.RetryAllDead(ctx, db)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "requeued %d dead letters\n", n)
	return nil
}

// retryDead requeues each of ids, going on after a failure; it returns every
// failure.
func retryDead(ctx context.Context, db *sql.DB, w io.Writer, ids []string) error {
	var errs []error
	for _, id := range ids {
		if err := relay.RetryDead(ctx, db, id); err != nil {
			if errors.Is(err, txmsg.ErrNotFound) {
				err = fmt.Errorf("dead letter %s: not found", id)
			}
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(w, "requeued %s\n", id)
	}
	return errors.Join(errs...)
}

// printable shows a key as text when it is, else as hex.
func printable(b []byte) string {
	switch {
	case b == nil:
		return "-"
	case utf8.Valid(b) && !strings.ContainsAny(string(b), "\t\n\r"):
		return string(b)
	default:
		return fmt.Sprintf("0x%x", b)
	}
}
