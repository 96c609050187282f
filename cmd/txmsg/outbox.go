package main

import (
	"context"
	"errors"
	"fmt"
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

func runOutbox(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("outbox", outboxSynopsis, e)
	loader := config.NewAdmin(fs)
	limit := fs.Int("limit", 100, "list: most dead letters shown")
	all := fs.Bool("all", false, "retry: every dead letter")
	if err := parse(fs, args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) < 2 || rest[0] != "dead" {
		return usagef("want 'outbox dead list' or 'outbox dead retry ID...|--all'")
	}
	action, ids := rest[1], rest[2:]
	switch action {
	case "list":
		if len(ids) > 0 {
			return usagef("dead list: unexpected argument %q", ids[0])
		}
		if *limit < 1 {
			return usagef("--limit %d: want at least 1", *limit)
		}
	case "retry":
		if *all == (len(ids) > 0) {
			return usagef("dead retry: give message ids or --all")
		}
	default:
		return usagef("unknown action %q: want list or retry", action)
	}
	db, err := openAdmin(ctx, loader)
	if err != nil {
		return err
	}
	defer db.Close()
	switch {
	case action == "list":
		dead, err := relay.ListDead(ctx, db, *limit)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSOURCE\tTOPIC\tKEY\tATTEMPTS\tDEAD_AT\tERROR")
		for _, d := range dead {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Source, d.Topic, printable(d.Key),
				d.Attempts, d.DeadAt.UTC().Format("2006-01-02 15:04:05"), strings.ReplaceAll(d.LastError, "\n", " "))
		}
		return tw.Flush()
	case *all:
		n, err := relay.RetryAllDead(ctx, db)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "requeued %d dead letters\n", n)
	default:
		var errs []error
		for _, id := range ids {
			if err := relay.RetryDead(ctx, db, id); err != nil {
				if errors.Is(err, txmsg.ErrNotFound) {
					err = fmt.Errorf("dead letter %s: not found", id)
				}
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(e.stdout, "requeued %s\n", id)
		}
		return errors.Join(errs...)
	}
	return nil
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
