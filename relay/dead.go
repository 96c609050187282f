package relay

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/codec"
	"github.com/txmsg/txmsg/internal/sqlx"
	"github.com/txmsg/txmsg/internal/sqlx/mysqlx"
)

// DeadLetter is a message Kafka refused for good, kept with its error. A
// dead letter is known by its Seq; the outbox and the broker may each
// dead-letter a message of one id and topic, one id may name messages of
// several topics, and an id published again after its message died may die
// again: every one is kept.
type DeadLetter struct {
	// Seq orders dead letters as they died (migration 0006).
	Seq       int64
	ID        string
	Source    string
	Shard     int
	Topic     string
	Key       []byte
	Value     []byte
	Headers   []txmsg.Header
	CreatedAt time.Time
	Attempts  int
	LastError string
	DeadAt    time.Time
	// rawHeaders holds stored headers that do not decode (Headers is then
	// nil), so that a retry puts them back byte for byte.
	rawHeaders []byte
}

const (
	insertDead = `INSERT INTO txmsg_dead_letters
(id, source, shard, topic, msg_key, value, headers, created_at, attempts, last_error, dead_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))`
	deadColumns = `seq, id, source, shard, topic, msg_key, value, headers, created_at, attempts, last_error, dead_at`
	// Ordered by death: the seqs migration 0006 gave existing dead letters
	// follow their old key, not their death.
	listDead = `SELECT ` + deadColumns + ` FROM txmsg_dead_letters ORDER BY dead_at, seq LIMIT ?`
	lockDead = `SELECT ` + deadColumns + ` FROM txmsg_dead_letters WHERE id = ? ORDER BY seq FOR UPDATE`
	// OFFSET passes over the dead letters an earlier batch left in place.
	lockAllDead = `SELECT ` + deadColumns + ` FROM txmsg_dead_letters ORDER BY dead_at, seq LIMIT 1000 OFFSET ? FOR UPDATE`
	deleteDead  = `DELETE FROM txmsg_dead_letters WHERE seq = ?`
	requeue     = `INSERT INTO txmsg_outbox (id, shard, topic, msg_key, value, headers, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)`
)

// dying is a row on its way to the dead letters, with why.
type dying struct {
	row    Row
	reason string
}

// moveToDead copies rows into txmsg_dead_letters and removes them from src,
// in one transaction that ends with fence. A row whose headers did not
// decode keeps them as stored.
func moveToDead(ctx context.Context, db *sql.DB, src Source, rows []dying, fence func(*sql.Tx) error) error {
	hdrs := make([][]byte, len(rows))
	for i, d := range rows {
		if d.row.badHeaders != nil {
			hdrs[i] = d.row.rawHeaders
			continue
		}
		hdr, err := codec.EncodeHeaders(d.row.Headers)
		if err != nil {
			return fmt.Errorf("relay: dead-letter %s: %w", d.row.ID, err)
		}
		hdrs[i] = hdr
	}
	removed := make([]Row, len(rows))
	err := sqlx.RunInTx(ctx, db, readCommitted(), func(tx *sql.Tx) error {
		for i, d := range rows {
			r := d.row
			if _, err := tx.ExecContext(ctx, insertDead, r.ID, src.Name(), r.Shard, r.Topic, r.Key, r.Value, hdrs[i],
				r.CreatedAt, r.Attempts, sqlx.Truncate(d.reason, 1024)); err != nil {
				return fmt.Errorf("insert %s: %w", r.ID, err)
			}
			removed[i] = r
		}
		if err := src.Remove(ctx, tx, removed); err != nil {
			return err
		}
		return fence(tx)
	})
	if err != nil {
		return fmt.Errorf("relay: dead-letter %d messages of %s: %w", len(rows), src.Name(), err)
	}
	return nil
}

// ListDead returns up to limit dead letters, oldest first.
func ListDead(ctx context.Context, db *sql.DB, limit int) ([]DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := db.QueryContext(ctx, listDead, limit)
	if err != nil {
		return nil, fmt.Errorf("relay: list dead letters: %w", err)
	}
	out, err := scanDead(rows)
	if err != nil {
		return nil, fmt.Errorf("relay: list dead letters: %w", err)
	}
	return out, nil
}

// RetryDead puts the dead letters of id (one per topic, source and death) back
// into txmsg_outbox (keeping their id, key and shard, at the end of their
// shard's queue) and deletes them, in one transaction. It fails with
// txmsg.ErrNotFound for an unknown id. Whatever its source, a retried
// message is delivered through the outbox. A dead letter whose topic and id
// are still pending in the outbox (or that shares them with another dead
// letter of id retried before it: from the other source, or an earlier
// death of the same id) stays dead: the others are retried,
// and the error wraps txmsg.ErrConflict; retry it once the pending message
// is delivered.
func RetryDead(ctx context.Context, db *sql.DB, id string) error {
	var left []DeadLetter
	err := sqlx.RunInTx(ctx, db, nil, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, lockDead, id)
		if err != nil {
			return err
		}
		ds, err := scanDead(rows)
		if err != nil {
			return err
		}
		if len(ds) == 0 {
			return fmt.Errorf("dead letter %q: %w", id, txmsg.ErrNotFound)
		}
		left, err = requeueAll(ctx, tx, ds)
		return err
	})
	if err != nil {
		return fmt.Errorf("relay: retry dead letter: %w", err)
	}
	if len(left) > 0 {
		return fmt.Errorf("relay: retry dead letter %q: %w", id, pendingConflict(left))
	}
	return nil
}

// RetryAllDead puts every dead letter back into txmsg_outbox, oldest first,
// in transactions of up to 1000, and returns how many it moved. Dead letters
// that RetryDead would leave in place stay dead, and the error then wraps
// txmsg.ErrConflict.
func RetryAllDead(ctx context.Context, db *sql.DB) (int64, error) {
	var (
		total int64
		left  []DeadLetter
	)
	for {
		var ds, kept []DeadLetter
		err := sqlx.RunInTx(ctx, db, nil, func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, lockAllDead, len(left))
			if err != nil {
				return err
			}
			if ds, err = scanDead(rows); err != nil {
				return err
			}
			kept, err = requeueAll(ctx, tx, ds)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("relay: retry all dead letters: %w", err)
		}
		total += int64(len(ds) - len(kept))
		left = append(left, kept...)
		if len(ds) < 1000 {
			break
		}
	}
	if len(left) > 0 {
		return total, fmt.Errorf("relay: retry all dead letters: %w", pendingConflict(left))
	}
	return total, nil
}

// requeueAll requeues ds through tx and returns those left in place because
// their topic and id are pending in the outbox. A duplicate key fails only
// its own statement, so the transaction goes on.
func requeueAll(ctx context.Context, tx *sql.Tx, ds []DeadLetter) ([]DeadLetter, error) {
	var left []DeadLetter
	for _, d := range ds {
		err := requeueDead(ctx, tx, d)
		if mysqlx.IsDuplicate(err) {
			left = append(left, d)
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	return left, nil
}

func pendingConflict(left []DeadLetter) error {
	d := left[0]
	return fmt.Errorf("%w: %d dead letters stay dead because their topic and id are pending in the outbox "+
		"(first: id %q, topic %s, from %s); retry them once it is delivered", txmsg.ErrConflict, len(left), d.ID, d.Topic, d.Source)
}

func requeueDead(ctx context.Context, tx *sql.Tx, d DeadLetter) error {
	hdr := d.rawHeaders
	if hdr == nil {
		var err error
		if hdr, err = codec.EncodeHeaders(d.Headers); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, requeue, d.ID, d.Shard, d.Topic, d.Key, d.Value, hdr, d.CreatedAt); err != nil {
		return fmt.Errorf("requeue %s (topic %s): %w", d.ID, d.Topic, err)
	}
	_, err := tx.ExecContext(ctx, deleteDead, d.Seq)
	return err
}

func scanDead(rows *sql.Rows) ([]DeadLetter, error) {
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var d DeadLetter
		var hdr []byte
		if err := rows.Scan(&d.Seq, &d.ID, &d.Source, &d.Shard, &d.Topic, &d.Key, &d.Value, &hdr, &d.CreatedAt,
			&d.Attempts, &d.LastError, &d.DeadAt); err != nil {
			return nil, err
		}
		// Headers that do not decode are why such a row was dead-lettered:
		// it is listed (and retried) with them as stored.
		if hs, err := codec.DecodeHeaders(hdr); err != nil {
			d.rawHeaders = hdr
		} else {
			d.Headers = hs
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
