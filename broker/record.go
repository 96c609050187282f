package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/sqlx"
)

// CheckRecord is one check for CheckStore.RecordChecks: the claim and the
// outcome of its call.
type CheckRecord struct {
	Claim  Claim
	Result CheckResult
}

// MaxRecordBatch is the most checks Store.RecordChecks writes in one
// transaction; a longer slice is written in several.
const MaxRecordBatch = 256

// The batch statements. Each changes one kind of outcome for many rows
// addressed by seq, fenced row by row as RecordCheck's are: state =
// prepared and the claim's check count (a CASE on seq, appended with the
// IN list by batchUpdate).
const (
	insertChecksHead = `INSERT INTO txmsg_half_checks (msg_id, check_no, result, error, latency_us, checked_at) VALUES `
	insertChecksRow  = `(?, ?, ?, ?, ?, UTC_TIMESTAMP(6))`
	resolveBatch     = `UPDATE txmsg_half_messages
SET state = ?, resolved_at = UTC_TIMESTAMP(6), next_check_at = UTC_TIMESTAMP(6), updated_at = UTC_TIMESTAMP(6),
  last_check_result = ?, last_check_error = NULL, waits_for = `
	discardBatch = `UPDATE txmsg_half_messages
SET state = ?, updated_at = UTC_TIMESTAMP(6), reason = `
	rescheduleBatch = `UPDATE txmsg_half_messages
SET updated_at = UTC_TIMESTAMP(6), next_check_at = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL `
)

// errBatchSeq makes RecordChecks record a batch one by one: a claim
// without a row (not from Store.ClaimDue), or one message claimed twice.
var errBatchSeq = errors.New("claims not addressable as one batch")

// RecordChecks implements CheckStore: it stores every record as
// RecordCheck would, with the same fencing, history rows and metrics, in
// one transaction per MaxRecordBatch records (one statement per kind of
// outcome, not per message). If that transaction fails, each of its
// records is tried alone, so one that cannot be stored fails alone. It
// returns nil when all were stored, else one error per record (nil for
// those stored).
func (s *Store) RecordChecks(ctx context.Context, recs []CheckRecord) []error {
	var errs []error
	for lo := 0; lo < len(recs); lo += MaxRecordBatch {
		hi := min(lo+MaxRecordBatch, len(recs))
		if e := s.recordChecks(ctx, recs[lo:hi]); e != nil {
			if errs == nil {
				errs = make([]error, len(recs))
			}
			copy(errs[lo:], e)
		}
	}
	return errs
}

func (s *Store) recordChecks(ctx context.Context, recs []CheckRecord) []error {
	if len(recs) > 1 {
		moved, err := s.recordBatch(ctx, recs)
		if err == nil {
			for to, n := range moved {
				for range n {
					s.metrics.Resolved(to, ByCheckback)
				}
			}
			return nil
		}
		if ctx.Err() != nil {
			return repeat(fmt.Errorf("broker: record %d checks: %w", len(recs), err), len(recs))
		}
		if !errors.Is(err, errBatchSeq) {
			s.log.WarnContext(ctx, "broker: checkback: batch of checks failed, recording them one by one",
				slog.Int("checks", len(recs)), slog.Any("error", err))
		}
	}
	var errs []error
	for i, r := range recs {
		if err := s.RecordCheck(ctx, r.Claim, r.Result); err != nil {
			if errs == nil {
				errs = make([]error, len(recs))
			}
			errs[i] = err
		}
	}
	return errs
}

func repeat(err error, n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// batchRow is a record with its stored result and error class.
type batchRow struct {
	CheckRecord
	result  string
	errText sql.NullString
}

// recordBatch writes recs in one transaction: history rows first (as in
// RecordCheck, so that a check's checked_at is no later than the time its
// next check is scheduled from), then one UPDATE per kind of outcome. It
// returns how many messages moved to each state.
func (s *Store) recordBatch(ctx context.Context, recs []CheckRecord) (map[halfmsg.State]int64, error) {
	var commits, rollbacks, discards, reschedules []batchRow
	seen := make(map[int64]bool, len(recs))
	for _, r := range recs {
		// One CASE on seq fences each row with its own claim: a message
		// claimed twice (its lease passed) needs two statements, as
		// RecordCheck makes.
		if r.Claim.seq == 0 || seen[r.Claim.seq] {
			return nil, errBatchSeq
		}
		seen[r.Claim.seq] = true
		b := batchRow{CheckRecord: r}
		b.result, b.errText = checkOutcome(r.Result)
		switch {
		case r.Result.Err == nil && r.Result.Answer == checkback.AnswerCommit:
			commits = append(commits, b)
		case r.Result.Err == nil && r.Result.Answer == checkback.AnswerRollback:
			rollbacks = append(rollbacks, b)
		case r.Result.Discard:
			discards = append(discards, b)
		default:
			reschedules = append(reschedules, b)
		}
	}
	var moved map[halfmsg.State]int64
	err := sqlx.RunInTx(ctx, s.db, nil, func(tx *sql.Tx) error {
		moved = map[halfmsg.State]int64{}
		if err := insertHistory(ctx, tx, recs); err != nil {
			return err
		}
		if len(commits) > 0 {
			waits, err := waitsFor(ctx, tx, commits)
			if err != nil {
				return err
			}
			n, err := batchUpdate(ctx, tx, resolveBatch, []any{halfmsg.StateCommitted, "commit"}, commits,
				func(b batchRow) []any { return []any{waits[b.Claim.seq]} })
			if err != nil {
				return fmt.Errorf("commit %d: %w", len(commits), err)
			}
			moved[halfmsg.StateCommitted] = n
		}
		if len(rollbacks) > 0 {
			n, err := batchUpdate(ctx, tx, resolveBatch, []any{halfmsg.StateRolledBack, "rollback"}, rollbacks,
				func(batchRow) []any { return []any{nil} })
			if err != nil {
				return fmt.Errorf("roll back %d: %w", len(rollbacks), err)
			}
			moved[halfmsg.StateRolledBack] = n
		}
		if len(discards) > 0 {
			n, err := batchUpdate(ctx, tx, discardBatch, []any{halfmsg.StateDiscarded}, discards,
				func(b batchRow) []any {
					return []any{discardReason(b.Claim, b.result, b.errText), b.result, b.errText}
				}, ", last_check_result = ", ", last_check_error = ")
			if err != nil {
				return fmt.Errorf("discard %d: %w", len(discards), err)
			}
			moved[halfmsg.StateDiscarded] = n
		}
		if len(reschedules) > 0 {
			if _, err := batchUpdate(ctx, tx, rescheduleBatch, nil, reschedules,
				func(b batchRow) []any { return []any{b.Result.NextCheck.Microseconds(), b.result, b.errText} },
				" MICROSECOND), last_check_result = ", ", last_check_error = "); err != nil {
				return fmt.Errorf("reschedule %d: %w", len(reschedules), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("broker: record %d checks: %w", len(recs), err)
	}
	return moved, nil
}

// insertHistory writes the history row of every record with one INSERT.
func insertHistory(ctx context.Context, tx *sql.Tx, recs []CheckRecord) error {
	var q strings.Builder
	q.WriteString(insertChecksHead)
	args := make([]any, 0, 5*len(recs))
	for i, r := range recs {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(insertChecksRow)
		result, errText := checkOutcome(r.Result)
		args = append(args, r.Claim.ID, r.Claim.CheckCount, result, errText, r.Result.Latency.Microseconds())
	}
	if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// waitsFor reads what each committed row will wait for (see
// selectTargets), keyed by seq.
func waitsFor(ctx context.Context, tx *sql.Tx, rows []batchRow) (map[int64]sql.NullInt64, error) {
	var seqs []any
	for _, b := range rows {
		seqs = append(seqs, b.Claim.seq)
	}
	ts, err := scanTargets(ctx, tx, selectTargetsBySeqs+sqlx.Placeholders(len(seqs))+")", false, seqs...)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	out := make(map[int64]sql.NullInt64, len(ts))
	for _, t := range ts {
		out[t.seq] = t.waitsFor
	}
	return out, nil
}

// batchUpdate runs head + args, then one "CASE seq WHEN … END" per value
// vals returns for a row, each after its column's text from cols (the first
// CASE directly after head), and the fence: rows of the batch still
// prepared whose check count is their claim's. It returns how many rows
// changed.
func batchUpdate(ctx context.Context, tx *sql.Tx, head string, args []any, rows []batchRow,
	vals func(batchRow) []any, cols ...string) (int64, error) {
	per := make([][]any, len(rows))
	for i, b := range rows {
		per[i] = vals(b)
	}
	var q strings.Builder
	q.WriteString(head)
	bySeq := func(k int) {
		q.WriteString("CASE seq")
		for i, b := range rows {
			q.WriteString(" WHEN ? THEN ?")
			if k < 0 {
				args = append(args, b.Claim.seq, b.Claim.CheckCount)
			} else {
				args = append(args, b.Claim.seq, per[i][k])
			}
		}
		q.WriteString(" END")
	}
	for k := range per[0] {
		if k > 0 {
			q.WriteString(cols[k-1])
		}
		bySeq(k)
	}
	q.WriteString(" WHERE state = ? AND check_count = ")
	args = append(args, halfmsg.StatePrepared)
	bySeq(-1)
	q.WriteString(" AND seq IN (" + sqlx.Placeholders(len(rows)) + ")")
	for _, b := range rows {
		args = append(args, b.Claim.seq)
	}
	res, err := tx.ExecContext(ctx, q.String(), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
