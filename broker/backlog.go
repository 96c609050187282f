package broker

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/internal/sqlx"
)

// exactBacklog is the most messages of one state a backlog reading counts
// one by one; above it the span of their seqs, group by group, stands for
// the count, as the relay does for the outbox.
const exactBacklog = 10000

// maxBacklogGroups is the most producer groups a backlog reading visits.
const maxBacklogGroups = 1000

const (
	backlogCount = `SELECT COUNT(*) FROM (SELECT 1 FROM txmsg_half_messages WHERE state = ? LIMIT ?) b`
	// Read only when the count is exact: at most exactBacklog rows.
	backlogOldest = `SELECT MIN(created_at) FROM txmsg_half_messages WHERE state = ?`
	// A group's first and last message in a state: dives into (state,
	// producer_group), whose entries end with the seq. The first of the next
	// group after a given one walks the groups without reading their rows.
	backlogFirst = `SELECT producer_group, seq, created_at FROM txmsg_half_messages
  FORCE INDEX (txmsg_half_messages_group_state)
  WHERE state = ? AND producer_group > ? ORDER BY producer_group, seq LIMIT 1`
	backlogLast = `SELECT seq FROM txmsg_half_messages FORCE INDEX (txmsg_half_messages_group_state)
  WHERE state = ? AND producer_group = ? ORDER BY seq DESC LIMIT 1`
)

// stateBacklog returns how many messages are in state and when the oldest
// was created, at a cost that does not grow with their number. Up to
// exactBacklog both are exact (one read of at most that many rows). Above,
// the count is the sum over the producer groups of the span from a group's
// first to its last seq in state (an upper bound: messages of other states
// in between count too, delivered ones kept for the retention among them),
// and the oldest the earliest created among each group's first message
// (first by seq, which follows creation), for the first maxBacklogGroups
// groups. It replaces COUNT(*), MIN(created_at) over every row of the
// state: 1.2 s for 870,000 committed messages, each reading.
func stateBacklog(ctx context.Context, q sqlx.Querier, state halfmsg.State) (int64, time.Time, error) {
	var n int64
	if err := sqlx.QueryRow(ctx, q, backlogCount, []any{state, exactBacklog + 1}, &n); err != nil || n == 0 {
		return 0, time.Time{}, err
	}
	if n <= exactBacklog {
		var oldest sql.NullTime
		err := sqlx.QueryRow(ctx, q, backlogOldest, []any{state}, &oldest)
		return n, oldest.Time, err
	}
	var (
		oldest time.Time
		span   int64
		group  string // groups are never empty: "" comes before all
	)
	for range maxBacklogGroups {
		var (
			first int64
			at    time.Time
		)
		err := sqlx.QueryRow(ctx, q, backlogFirst, []any{state, group}, &group, &first, &at)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return 0, time.Time{}, err
		}
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
		var last int64
		if err := sqlx.QueryRow(ctx, q, backlogLast, []any{state, group}, &last); err != nil {
			return 0, time.Time{}, err
		}
		span += last - first + 1
	}
	return max(n, span), oldest, nil
}
