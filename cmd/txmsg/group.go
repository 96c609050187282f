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
	if fs.NArg() == 0 {
		return usagef("missing action: create, rotate, list or delete")
	}
	action, rest := fs.Arg(0), fs.Args()[1:]
	want := 1
	if action == "list" {
		want = 0
	}
	switch action {
	case "create", "rotate", "list", "delete":
		if len(rest) != want {
			return usagef("%s: want %d argument(s), got %d", action, want, len(rest))
		}
	default:
		return usagef("unknown action %q: want create, rotate, list or delete", action)
	}
	if action == "create" && *url == "" {
		return usagef("create: --url is required")
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
		gs, err := store.Groups(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "GROUP\tCHECKBACK_URL\tUPDATED_AT")
		for _, g := range gs {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", g.Name, g.CheckbackURL, g.UpdatedAt.UTC().Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	case "delete":
		if err := store.DeleteGroup(ctx, operator, rest[0]); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "group %s deleted\n", rest[0])
		return nil
	}
	name := rest[0]
	_, err = store.GroupURL(ctx, name)
	switch {
	case action == "create" && err == nil:
		return fmt.Errorf("group %s exists: 'txmsg group rotate %s' issues new credentials", name, name)
	case action == "rotate" && errors.Is(err, txmsg.ErrNotFound):
		return fmt.Errorf("group %s is not registered: 'txmsg group create %s --url URL' registers it", name, name)
	case err != nil && !errors.Is(err, txmsg.ErrNotFound):
		return err
	}
	g, err := store.PutGroup(ctx, operator, name, *url, action == "rotate")
	if err != nil {
		return err
	}
	printCredentials(e.stdout, g)
	return nil
}

// printCredentials shows a group's new credentials: the only time anyone
// sees them.
func printCredentials(w io.Writer, g halfmsg.Group) {
	fmt.Fprintf(w, "group:         %s\ncheckback_url: %s\ntoken:         %s\nsecret:        %s\n", g.Name, g.CheckbackURL, g.Token, g.Secret)
	fmt.Fprintln(w, "Store the token and the secret now: they are not shown again. The producer sends the token to the")
	fmt.Fprintln(w, "broker (halfmsg.WithToken) and verifies check-backs with the secret (halfmsg.WithProducerSecret).")
}
