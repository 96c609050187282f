package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ErrDataLoss is returned by Down when reverting would discard data: rows
// of the tables a down migration drops, or what its dropped columns hold.
// Down with DiscardData reverts anyway.
var ErrDataLoss = errors.New("migrations: reverting would discard data")

// DownOption configures Down.
type DownOption func(*downOptions)

type downOptions struct{ discard bool }

// DiscardData lets Down revert migrations whose down files drop data
// (pending messages, inbox rows, group credentials...).
func DiscardData() DownOption { return func(o *downOptions) { o.discard = true } }

// loss is one kind of data a down migration discards: a query counting it.
type loss struct {
	what  string
	count string
}

// losses lists, by version, what reverting that migration discards.
var losses = map[int][]loss{
	1: {
		{"messages pending in txmsg_outbox", `SELECT COUNT(*) FROM txmsg_outbox`},
		{"dead letters", `SELECT COUNT(*) FROM txmsg_dead_letters`},
		{"delivered messages kept in txmsg_outbox_delivered", `SELECT COUNT(*) FROM txmsg_outbox_delivered`},
	},
	2: {
		{"half messages", `SELECT COUNT(*) FROM txmsg_half_messages`},
		{"producer groups", `SELECT COUNT(*) FROM txmsg_producer_groups`},
		{"check-back ledger rows (local transactions' outcomes)", `SELECT COUNT(*) FROM txmsg_checkback_ledger`},
		{"check-back history rows", `SELECT COUNT(*) FROM txmsg_half_checks`},
	},
	3: {
		{"inbox rows (consumers would apply those messages again)", `SELECT COUNT(*) FROM txmsg_inbox`},
	},
	4: {
		{"producer groups' delivery orders", `SELECT COUNT(*) FROM txmsg_producer_groups WHERE delivery_order <> 1`},
	},
	5: {
		{"producer groups' tokens and check-back secrets", `SELECT COUNT(*) FROM txmsg_producer_groups
WHERE token_hash IS NOT NULL OR checkback_secret IS NOT NULL`},
	},
	6: {
		{"older dead letters of one id, topic and source", `SELECT COALESCE(SUM(n - 1), 0)
FROM (SELECT COUNT(*) AS n FROM txmsg_dead_letters GROUP BY id, topic, source) d`},
	},
}

// checkLoss fails with ErrDataLoss, naming what and how much, when reverting
// the versions would discard data.
func checkLoss(ctx context.Context, q *sql.Conn, versions []int) error {
	var found []string
	for _, v := range versions {
		for _, l := range losses[v] {
			var n int64
			if err := q.QueryRowContext(ctx, l.count).Scan(&n); err != nil {
				return fmt.Errorf("migrations: down %04d: count %s: %w", v, l.what, err)
			}
			if n > 0 {
				found = append(found, fmt.Sprintf("%d %s (%04d)", n, l.what, v))
			}
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("%w: %s; deliver, purge or export them first, or revert with --discard-data", ErrDataLoss, strings.Join(found, ", "))
	}
	return nil
}
