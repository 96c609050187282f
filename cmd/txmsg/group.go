package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/config"
)

const groupSynopsis = `group create NAME --url URL | group rotate NAME [--url URL] | group list | group delete NAME

  create  register a producer group and its check-back URL; prints the
          group's API token and check-back secret, once
  rotate  issue a new token and secret (the old ones stop at once); --url
          also moves the check-back URL
  list    list the registered groups
  delete  remove a group: its token stops working at once

Works on the database directly, as the operator. The URL must pass the
check-back address policy (checkback.allow_loopback, checkback.allow_hosts).`

func runGroup(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("group", groupSynopsis, e)
	loader := config.NewGroup(fs)
	url := fs.String("url", "", "create, rotate: the group's check-back URL")
	if err := parse(fs, args); err != nil {
		return err
	}
	action, rest, err := groupArgs(fs.Args(), *url)
	if err != nil {
		return err
	}
	cfg, err := loader.Load()
	if err != nil {
		return err
	}
	var level slog.LevelVar
	log := newLogger(e.stderr, cfg.Log, &level)
	db, err := openDB(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := broker.NewStore(db, broker.WithAddressPolicy(cfg.Policy), broker.WithStoreLogger(log))
	if err != nil {
		return err
	}
	operator := broker.Actor{Name: "operator (txmsg group)"}
	switch action {
	case "list":
		return listGroups(ctx, store, e.stdout)
	case "delete":
		if err := store.DeleteGroup(ctx, operator, rest[0]); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "group %s deleted\n", rest[0])
		return nil
	}
	return putGroup(ctx, store, operator, e.stdout, action, rest[0], *url)
}

// groupArgs checks the action and its arguments before anything connects.
func groupArgs(args []string, url string) (action string, rest []string, err error) {
	if len(args) == 0 {
		return "", nil, usagef("missing action: create, rotate, list or delete")
	}
	action, rest = args[0], args[1:]
	want := 1
	if action == "list" {
		want = 0
	}
	switch action {
	case "create", "rotate", "list", "delete":
		if len(rest) != want {
			return "", nil, usagef("%s: want %d argument(s), got %d", action, want, len(rest))
		}
	default:
		return "", nil, usagef("unknown action %q: want create, rotate, list or delete", action)
	}
	if action == "create" && url == "" {
		return "", nil, usagef("create: --url is required")
	}
	return action, rest, nil
}

func listGroups(ctx context.Context, store *broker.Store, w io.Writer) error {
	gs, err := store.Groups(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tCHECKBACK_URL\tDELIVERY_ORDER\tUPDATED_AT")
	for _, g := range gs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, g.CheckbackURL, g.Order, g.UpdatedAt.UTC().Format("2006-01-02 15:04:05"))
	}
	return tw.Flush()
}

// putGroup creates a group or rotates its credentials, and prints them.
func putGroup(ctx context.Context, store *broker.Store, operator broker.Actor, w io.Writer, action, name, url string) error {
	_, err := store.GroupURL(ctx, name)
	switch {
	case action == "create" && err == nil:
		return fmt.Errorf("group %s exists: 'txmsg group rotate %s' issues new credentials", name, name)
	case action == "rotate" && errors.Is(err, txmsg.ErrNotFound):
		return fmt.Errorf("group %s is not registered: 'txmsg group create %s --url URL' registers it", name, name)
	case err != nil && !errors.Is(err, txmsg.ErrNotFound):
		return err
	}
	g, err := store.PutGroup(ctx, operator, name, url, action == "rotate")
	if err != nil {
		return err
	}
	printCredentials(w, g)
	return nil
}

// printCredentials shows a group's new credentials: the only time anyone
// sees them.
func printCredentials(w io.Writer, g halfmsg.Group) {
	fmt.Fprintf(w, "group:         %s\ncheckback_url: %s\ntoken:         %s\nsecret:        %s\n", g.Name, g.CheckbackURL, g.Token, g.Secret)
	fmt.Fprintln(w, "Store the token and the secret now: they are not shown again. The producer sends the token to the")
	fmt.Fprintln(w, "broker (halfmsg.WithToken) and verifies check-backs with the secret (halfmsg.WithProducerSecret).")
}
