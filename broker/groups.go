package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/sqlx"
	"github.com/txmsg/txmsg/internal/sqlx/mysqlx"
)

const (
	lockGroup = `SELECT checkback_url, token_hash IS NOT NULL FROM txmsg_producer_groups
WHERE producer_group = ? FOR UPDATE`
	// A NULL delivery order keeps the group's (a new group's is prepare).
	insertGroup = `INSERT INTO txmsg_producer_groups
  (producer_group, checkback_url, token_hash, checkback_secret, delivery_order, updated_at)
VALUES (?, ?, ?, ?, COALESCE(?, 1), UTC_TIMESTAMP(6))`
	updateGroupURL = `UPDATE txmsg_producer_groups
SET checkback_url = ?, delivery_order = COALESCE(?, delivery_order), updated_at = UTC_TIMESTAMP(6)
WHERE producer_group = ?`
	updateGroupCredentials = `UPDATE txmsg_producer_groups
SET checkback_url = ?, token_hash = ?, checkback_secret = ?, delivery_order = COALESCE(?, delivery_order),
  updated_at = UTC_TIMESTAMP(6)
WHERE producer_group = ?`
	selectGroupUpdated = `SELECT updated_at, delivery_order FROM txmsg_producer_groups WHERE producer_group = ?`
	selectGroup        = `SELECT checkback_url, delivery_order FROM txmsg_producer_groups WHERE producer_group = ?`
	selectGroups       = `SELECT producer_group, checkback_url, delivery_order, updated_at FROM txmsg_producer_groups
ORDER BY producer_group`
	deleteGroup      = `DELETE FROM txmsg_producer_groups WHERE producer_group = ?`
	selectTokenGroup = `SELECT producer_group FROM txmsg_producer_groups WHERE token_hash = ?`
	// countPrepared stops at the limit, so that a group far over it costs
	// no more than one at it.
	countPrepared = `SELECT COUNT(*) FROM (SELECT 1 FROM txmsg_half_messages
WHERE state = ? AND producer_group = ? LIMIT ?) AS p`
)

// PutGroup registers producer group name with its check-back URL, or
// changes the URL of a registered group (an empty checkbackURL keeps it).
// When the group is new, has no credentials yet (it was registered before
// they existed), or rotate is set, it issues the group's token and secret
// and returns them: this is the only time they are shown, the store keeps
// only a hash of the token, and a rotation stops the old ones at once. The
// URL must pass the AddressPolicy, also for the addresses its host resolves
// to now (a refusal wraps txmsg.ErrInvalidMessage and names the rule). Only
// the operator registers groups (txmsg.ErrForbidden otherwise); the change
// goes to the audit log, without the credentials. Options set the group's
// delivery order (halfmsg.WithDeliveryOrder); left out, a new group delivers
// in prepare order and a registered one keeps its order. Group names
// compare byte for byte: "Shop2" and "shop2" are two groups.
func (s *Store) PutGroup(ctx context.Context, a Actor, name, checkbackURL string, rotate bool, opts ...halfmsg.GroupOption) (halfmsg.Group, error) {
	if !a.isOperator() {
		return halfmsg.Group{}, fmt.Errorf("broker: register group %s: %w: only the operator registers groups", name, txmsg.ErrForbidden)
	}
	if err := halfmsg.ValidateGroup(name); err != nil {
		return halfmsg.Group{}, fmt.Errorf("broker: register group: %w", err)
	}
	var want halfmsg.Group
	for _, o := range opts {
		o(&want)
	}
	if want.Order != 0 && !want.Order.Valid() {
		return halfmsg.Group{}, fmt.Errorf("broker: register group %s: %w: delivery order %d: want prepare or commit",
			name, txmsg.ErrInvalidMessage, uint8(want.Order))
	}
	if checkbackURL != "" {
		if err := s.rules.checkURL(checkbackURL); err != nil {
			return halfmsg.Group{}, fmt.Errorf("broker: register group %s: %w", name, err)
		}
		if err := s.rules.checkResolved(ctx, checkbackURL); err != nil {
			return halfmsg.Group{}, fmt.Errorf("broker: register group %s: %w", name, err)
		}
	}
	var (
		g      halfmsg.Group
		oldURL string
		found  bool
		err    error
	)
	// Two operators registering one new group at once: the second INSERT
	// fails on the primary key, and a second round finds the row.
	for range 2 {
		g, oldURL, found, err = s.putGroup(ctx, name, checkbackURL, rotate, want.Order)
		if !mysqlx.IsDuplicate(err) {
			break
		}
	}
	if err != nil {
		return halfmsg.Group{}, err
	}
	event := "registered"
	switch {
	case found && g.Token != "":
		event = "credentials rotated"
	case found:
		event = "updated"
	}
	s.log.InfoContext(ctx, "broker: audit: producer group "+event, slog.String("actor", a.String()),
		slog.String("producer_group", name), slog.String("from", oldURL), slog.String("to", g.CheckbackURL),
		slog.Bool("credentials_issued", g.Token != ""))
	return g, nil
}

// putGroup is one attempt of PutGroup, in one transaction that locks the
// group's row.
func (s *Store) putGroup(ctx context.Context, name, checkbackURL string, rotate bool, order halfmsg.Order) (g halfmsg.Group, oldURL string, found bool, err error) {
	orderArg := sql.NullInt64{Int64: int64(order), Valid: order != 0}
	err = sqlx.RunInTx(ctx, s.db, nil, func(tx *sql.Tx) error {
		g = halfmsg.Group{Name: name, CheckbackURL: checkbackURL}
		var hasCredentials bool
		err := tx.QueryRowContext(ctx, lockGroup, name).Scan(&oldURL, &hasCredentials)
		found = err == nil
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if checkbackURL == "" {
				return fmt.Errorf("%w: checkback_url is required to register a new group", txmsg.ErrInvalidMessage)
			}
		case err != nil:
			return err
		}
		if g.CheckbackURL == "" {
			g.CheckbackURL = oldURL
		}
		if !found || rotate || !hasCredentials {
			if g.Token, err = newCredential(groupTokenPrefix); err != nil {
				return err
			}
			if g.Secret, err = newCredential(secretPrefix); err != nil {
				return err
			}
		}
		switch {
		case !found:
			_, err = tx.ExecContext(ctx, insertGroup, name, g.CheckbackURL, tokenHash(g.Token), g.Secret, orderArg)
		case g.Token != "":
			_, err = tx.ExecContext(ctx, updateGroupCredentials, g.CheckbackURL, tokenHash(g.Token), g.Secret, orderArg, name)
		default:
			_, err = tx.ExecContext(ctx, updateGroupURL, g.CheckbackURL, orderArg, name)
		}
		if err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, selectGroupUpdated, name).Scan(&g.UpdatedAt, &g.Order)
	})
	if err != nil {
		return halfmsg.Group{}, "", false, fmt.Errorf("broker: register group %s: %w", name, err)
	}
	return g, oldURL, found, nil
}

// SetGroup registers (or re-points) a producer group as the operator, like
// PutGroup without rotation, and drops the credentials of a new group: for
// tools and tests whose groups never use their own token.
func (s *Store) SetGroup(ctx context.Context, group, checkbackURL string, opts ...halfmsg.GroupOption) error {
	if checkbackURL == "" {
		return fmt.Errorf("broker: set group %s: %w: checkback_url is required", group, txmsg.ErrInvalidMessage)
	}
	_, err := s.PutGroup(ctx, Actor{}, group, checkbackURL, false, opts...)
	return err
}

// Group returns the registration of group, without credentials, or an
// error wrapping txmsg.ErrNotFound.
func (s *Store) Group(ctx context.Context, group string) (halfmsg.Group, error) {
	g := halfmsg.Group{Name: group}
	err := s.db.QueryRowContext(ctx, selectGroup, group).Scan(&g.CheckbackURL, &g.Order)
	if errors.Is(err, sql.ErrNoRows) {
		return halfmsg.Group{}, fmt.Errorf("broker: group %s: %w", group, txmsg.ErrNotFound)
	}
	if err != nil {
		return halfmsg.Group{}, fmt.Errorf("broker: group %s: %w", group, err)
	}
	return g, nil
}

// GroupURL returns the check-back URL registered for group, or an error
// wrapping txmsg.ErrNotFound.
func (s *Store) GroupURL(ctx context.Context, group string) (string, error) {
	g, err := s.Group(ctx, group)
	return g.CheckbackURL, err
}

// Groups returns every registered group by name, without credentials.
func (s *Store) Groups(ctx context.Context) ([]halfmsg.Group, error) {
	rows, err := s.db.QueryContext(ctx, selectGroups)
	if err != nil {
		return nil, fmt.Errorf("broker: list groups: %w", err)
	}
	defer rows.Close()
	var out []halfmsg.Group
	for rows.Next() {
		var g halfmsg.Group
		if err := rows.Scan(&g.Name, &g.CheckbackURL, &g.Order, &g.UpdatedAt); err != nil {
			return nil, fmt.Errorf("broker: list groups: %w", err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("broker: list groups: %w", err)
	}
	return out, nil
}

// DeleteGroup removes a group's registration: its token stops working at
// once, and its prepared messages are checked back only if they name their
// own URL (unsigned, so a producer verifying signatures refuses them). Only
// the operator deletes groups (txmsg.ErrForbidden otherwise); an unknown
// group fails with txmsg.ErrNotFound.
func (s *Store) DeleteGroup(ctx context.Context, a Actor, group string) error {
	if !a.isOperator() {
		return fmt.Errorf("broker: delete group %s: %w: only the operator deletes groups", group, txmsg.ErrForbidden)
	}
	res, err := s.db.ExecContext(ctx, deleteGroup, group)
	if err != nil {
		return fmt.Errorf("broker: delete group %s: %w", group, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("broker: delete group %s: %w", group, txmsg.ErrNotFound)
	}
	s.log.InfoContext(ctx, "broker: audit: producer group deleted", slog.String("actor", a.String()),
		slog.String("producer_group", group))
	return nil
}

// groupByToken returns the group whose token is token, or an error wrapping
// txmsg.ErrUnauthorized. Neither the token nor its hash is in the error.
func (s *Store) groupByToken(ctx context.Context, token string) (string, error) {
	var g string
	err := s.db.QueryRowContext(ctx, selectTokenGroup, tokenHash(token)).Scan(&g)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("broker: %w: no such token", txmsg.ErrUnauthorized)
	}
	if err != nil {
		return "", fmt.Errorf("broker: look up a token: %w", err)
	}
	return g, nil
}
