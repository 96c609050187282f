package broker

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/codec"
	"github.com/txmsg/txmsg/internal/sqlx"
)

const (
	selectDue = `SELECT seq, id, producer_group, topic, msg_key, headers, check_count, max_checks,
  check_timeout_ms, checkback_url
FROM txmsg_half_messages
WHERE state = ? AND next_check_at <= UTC_TIMESTAMP(6)
ORDER BY next_check_at
LIMIT ?
FOR UPDATE SKIP LOCKED`
	claimDue = `UPDATE txmsg_half_messages
SET check_count = check_count + 1, last_check_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6),
  next_check_at = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND)
WHERE seq IN (`
	resolveByCheck = `UPDATE txmsg_half_messages
SET state = ?, resolved_at = UTC_TIMESTAMP(6), next_check_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6),
  last_check_result = ?, last_check_error = NULL, waits_for = ?
WHERE id = ? AND topic = ? AND state = ? AND check_count = ?`
	rescheduleCheck = `UPDATE txmsg_half_messages
SET next_check_at = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND), updated_at = UTC_TIMESTAMP(6),
  last_check_result = ?, last_check_error = ?
WHERE id = ? AND topic = ? AND state = ? AND check_count = ?`
	discardByCheck = `UPDATE txmsg_half_messages
SET state = ?, updated_at = UTC_TIMESTAMP(6), reason = ?, last_check_result = ?, last_check_error = ?
WHERE id = ? AND topic = ? AND state = ? AND check_count = ?`
	selectGroupURLs = `SELECT producer_group, checkback_url, checkback_secret FROM txmsg_producer_groups WHERE producer_group IN (`
	// insertCheck skips a check already in the history: RecordChecks
	// records a batch whose COMMIT's outcome is unknown again one by one.
	insertCheck = `INSERT INTO txmsg_half_checks (msg_id, check_no, result, error, latency_us, checked_at)
SELECT ?, ?, ?, ?, ?, UTC_TIMESTAMP(6) FROM DUAL
WHERE NOT EXISTS (SELECT 1 FROM txmsg_half_checks WHERE msg_id = ? AND check_no = ?)`
)

// ClaimDue implements checkback.Store: in one short transaction it locks up
// to limit due prepared messages with SKIP LOCKED (rows another instance is
// claiming are passed over, not waited for), counts the check and moves
// next_check_at lease ahead, so no other instance claims them until this
// check is recorded or the lease has passed.
func (s *Store) ClaimDue(ctx context.Context, limit int, lease time.Duration) ([]Claim, error) {
	var claims []Claim
	err := sqlx.RunInTx(ctx, s.db, nil, func(tx *sql.Tx) error {
		claims = claims[:0]
		rows, err := tx.QueryContext(ctx, selectDue, halfmsg.StatePrepared, limit)
		if err != nil {
			return fmt.Errorf("select due: %w", err)
		}
		var seqs []any
		for rows.Next() {
			var (
				c         Claim
				seq       int64
				key, hdr  []byte
				timeoutMS int64
				url       sql.NullString
			)
			if err := rows.Scan(&seq, &c.ID, &c.ProducerGroup, &c.Topic, &key, &hdr, &c.CheckCount,
				&c.MaxChecks, &timeoutMS, &url); err != nil {
				rows.Close()
				return fmt.Errorf("scan due: %w", err)
			}
			c.Key, c.URL = string(key), url.String
			c.Interval = time.Duration(timeoutMS) * time.Millisecond
			c.CheckCount++
			if hs, err := codec.DecodeHeaders(hdr); err == nil && len(hs) > 0 {
				c.Headers = make(map[string]string, len(hs))
				for _, h := range hs {
					c.Headers[h.Key] = string(h.Value)
				}
			}
			c.seq = seq
			seqs = append(seqs, seq)
			claims = append(claims, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read due: %w", err)
		}
		if len(seqs) == 0 {
			return nil
		}
		q := claimDue + sqlx.Placeholders(len(seqs)) + ")"
		if _, err := tx.ExecContext(ctx, q, append([]any{lease.Microseconds()}, seqs...)...); err != nil {
			return fmt.Errorf("claim %d: %w", len(seqs), err)
		}
		return fillGroups(ctx, tx, claims)
	})
	if err != nil {
		return nil, fmt.Errorf("broker: claim due checks: %w", err)
	}
	return claims, nil
}

// fillGroups sets the URL of claims that have none from their producer
// group's registration, and the secret their check-back is signed with. It
// reads without locking: a FOR UPDATE over a join would lock the group rows
// too, and SKIP LOCKED would then pass over every message of a group another
// instance is claiming.
func fillGroups(ctx context.Context, tx *sql.Tx, claims []Claim) error {
	var groups []any
	seen := map[string]bool{}
	for _, c := range claims {
		if !seen[c.ProducerGroup] {
			seen[c.ProducerGroup] = true
			groups = append(groups, c.ProducerGroup)
		}
	}
	if len(groups) == 0 {
		return nil
	}
	rows, err := tx.QueryContext(ctx, selectGroupURLs+sqlx.Placeholders(len(groups))+")", groups...)
	if err != nil {
		return fmt.Errorf("read groups: %w", err)
	}
	defer rows.Close()
	type group struct{ url, secret string }
	found := map[string]group{}
	for rows.Next() {
		var (
			g, u   string
			secret sql.NullString
		)
		if err := rows.Scan(&g, &u, &secret); err != nil {
			return fmt.Errorf("read groups: %w", err)
		}
		found[g] = group{u, secret.String}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read groups: %w", err)
	}
	for i := range claims {
		g := found[claims[i].ProducerGroup]
		if claims[i].URL == "" {
			claims[i].URL = g.url
		}
		claims[i].Secret = g.secret
	}
	return nil
}

// RecordCheck implements checkback.Store. Every UPDATE is fenced by state =
// prepared and the check count of the claim: a commit or rollback that
// arrived while the check was in flight has left prepared, so the check's
// answer changes nothing (the producer's own call wins), and a check whose
// lease expired and was claimed again cannot overwrite the newer one. The
// claim's topic picks its row among the messages prepared under one id; a
// commit records what the row waits for, as Commit does.
func (s *Store) RecordCheck(ctx context.Context, c Claim, r CheckResult) error {
	result, errText := checkOutcome(r)
	var (
		to      halfmsg.State
		changed bool
	)
	err := sqlx.RunInTx(ctx, s.db, nil, func(tx *sql.Tx) error {
		// History first: its checked_at is then no later than the time the
		// next check is scheduled from, so two checks' recorded times are at
		// least the backoff apart however slowly the statements run.
		if _, err := tx.ExecContext(ctx, insertCheck, c.ID, c.CheckCount, result, errText, r.Latency.Microseconds(),
			c.ID, c.CheckCount); err != nil {
			return fmt.Errorf("history: %w", err)
		}
		var err error
		to, changed, err = applyCheck(ctx, tx, c, r, result, errText)
		return err
	})
	if err != nil {
		return fmt.Errorf("broker: record check %d of %s: %w", c.CheckCount, c.ID, err)
	}
	if changed && to != 0 {
		s.metrics.Resolved(to, ByCheckback)
	}
	return nil
}

// checkOutcome returns the result column of r ("commit", "rollback",
// "unknown" or "error") and, for an error, its classification. Only the
// classification is stored and shown, never the error's text, which may
// hold what the producer's host said.
func checkOutcome(r CheckResult) (string, sql.NullString) {
	if r.Err != nil {
		return "error", nullString(checkErrorClass(r.Err))
	}
	return r.Answer.String(), sql.NullString{}
}

// discardReason is the reason stored with a message discarded by check c.
func discardReason(c Claim, result string, errText sql.NullString) string {
	reason := fmt.Sprintf("no commit or rollback after %d check-backs (last: %s)", c.CheckCount, result)
	if errText.Valid {
		reason += ": " + errText.String
	}
	return sqlx.Truncate(reason, 1024)
}

// applyCheck applies check result r of claim c to its message in tx:
// resolved, discarded, or scheduled for another check. It returns the state
// the message moved to (0 for a reschedule) and whether its row changed.
func applyCheck(ctx context.Context, tx *sql.Tx, c Claim, r CheckResult, result string, errText sql.NullString) (halfmsg.State, bool, error) {
	var (
		to  halfmsg.State
		res sql.Result
		err error
	)
	switch {
	case r.Err == nil && r.Answer == checkback.AnswerCommit:
		to = halfmsg.StateCommitted
		ts, terr := targets(ctx, tx, c.ID, c.Topic)
		if terr != nil {
			return 0, false, fmt.Errorf("read state: %w", terr)
		}
		var waits sql.NullInt64
		if len(ts) == 1 {
			waits = ts[0].waitsFor
		}
		res, err = tx.ExecContext(ctx, resolveByCheck, to, result, waits, c.ID, c.Topic, halfmsg.StatePrepared, c.CheckCount)
	case r.Err == nil && r.Answer == checkback.AnswerRollback:
		to = halfmsg.StateRolledBack
		res, err = tx.ExecContext(ctx, resolveByCheck, to, result, nil, c.ID, c.Topic, halfmsg.StatePrepared, c.CheckCount)
	case r.Discard:
		to = halfmsg.StateDiscarded
		res, err = tx.ExecContext(ctx, discardByCheck, to, discardReason(c, result, errText), result, errText,
			c.ID, c.Topic, halfmsg.StatePrepared, c.CheckCount)
	default:
		res, err = tx.ExecContext(ctx, rescheduleCheck, r.NextCheck.Microseconds(), result, errText,
			c.ID, c.Topic, halfmsg.StatePrepared, c.CheckCount)
	}
	if err != nil {
		return 0, false, err
	}
	n, err := res.RowsAffected()
	return to, n == 1, err
}

// Check is one check-back of a message, from the history table.
type Check struct {
	No        int
	Result    string
	Error     string
	Latency   time.Duration
	CheckedAt time.Time
}

const selectChecks = `SELECT check_no, result, error, latency_us, checked_at
FROM txmsg_half_checks WHERE msg_id = ? ORDER BY seq`

// Checks returns the check-back history of id, oldest first.
func (s *Store) Checks(ctx context.Context, id string) ([]Check, error) {
	rows, err := s.db.QueryContext(ctx, selectChecks, id)
	if err != nil {
		return nil, fmt.Errorf("broker: checks of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Check
	for rows.Next() {
		var (
			c   Check
			e   sql.NullString
			lat int64
		)
		if err := rows.Scan(&c.No, &c.Result, &e, &lat, &c.CheckedAt); err != nil {
			return nil, fmt.Errorf("broker: checks of %s: %w", id, err)
		}
		c.Error, c.Latency = e.String, time.Duration(lat)*time.Microsecond
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("broker: checks of %s: %w", id, err)
	}
	return out, nil
}
