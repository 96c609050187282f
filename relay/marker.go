package relay

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/txmsg/txmsg/internal/sqlx"
)

// markRows bounds the rows one marking transaction covers, so that its
// statements stay well under the protocol's 65,535 placeholders and its
// locks few; a round's rows are never split.
const markRows = 8192

// markQueue is how many rounds' rows may wait for the next marking
// transaction; a round that finds the queue full waits for room, so marking
// that falls behind slows the rounds down instead of piling up.
const markQueue = 256

// markSpacing is the least time between the starts of two marking
// transactions while their rows are fewer than markEager: under a steady
// trickle each commit would otherwise cover the two or three rows that
// arrived during the last one, hundreds of durable commits a second beside
// the producers' own. Rounds do not wait for their marks (see marking), so
// the spacing costs no delivery latency; it only keeps delivered rows in the
// table, skipped by the polls, a few milliseconds longer.
const (
	markSpacing = 10 * time.Millisecond
	markEager   = 256
)

// markRequest is one round's delivered rows, waiting to be marked.
type markRequest struct {
	src  Source
	rows []Row
	// deadline is when the round stops waiting (zero: no deadline).
	deadline time.Time
	done     chan error
}

// marker marks the delivered rows of many shards' rounds in one
// transaction: each commit is a durable write (an fsync), and under a
// steady trickle every shard's round would otherwise pay one for its one or
// two rows, competing with the producers' own commits. A round's rows that
// arrive while a transaction runs join the next one (group commit, as
// InnoDB does for its log), and a transaction of few rows starts no sooner
// than markSpacing after the last; the round itself does not wait (see
// marking).
type marker struct {
	db   *sql.DB
	reqs chan *markRequest
	// conn is the marker's own connection, READ COMMITTED and autocommit
	// for its session (see readCommitted), so a transaction needs no SET
	// TRANSACTION first, a lone statement none at all, and neither queues
	// for the pool; only the run goroutine uses it, and it is discarded,
	// never pooled, since its session differs.
	conn *sql.Conn
	// spacing is markSpacing, but for tests.
	spacing time.Duration
}

func newMarker(db *sql.DB) *marker {
	return &marker{db: db, reqs: make(chan *markRequest, markQueue), spacing: markSpacing}
}

// submit hands rows to the marker, to be marked by ctx's deadline, and
// returns where the outcome will come: once, whatever it is. It waits only
// while the queue is full. run must be running until the outcome came.
func (m *marker) submit(ctx context.Context, src Source, rows []Row) (<-chan error, error) {
	r := &markRequest{src: src, rows: rows, done: make(chan error, 1)}
	r.deadline, _ = ctx.Deadline()
	select {
	case m.reqs <- r:
		return r.done, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// marking is what a worker handed the marker and has not heard back about.
// The worker's polls skip those rows (still in the table until their
// DELETE commits), so its next rounds need not wait for the mark: a mark
// takes a durable commit, 1–10 ms, and every row arriving in the shard
// meanwhile waited for it. A round waits only when its rows would not fit
// beside those being marked within a batch (see room). A failed mark leaves
// its rows pending below the worker's floor, so the worker then reads its
// shard from the start again.
type marking struct {
	mu   sync.Mutex
	seqs map[int64]struct{}
	// freed, when set, is closed at the next mark's outcome (see room).
	freed chan struct{}
	wg    sync.WaitGroup
	// failed is set by a failed mark until the worker's next read.
	failed atomic.Bool
}

// add records rows as being marked.
func (k *marking) add(rows []Row) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seqs == nil {
		k.seqs = make(map[int64]struct{}, len(rows))
	}
	for _, r := range rows {
		k.seqs[r.Seq] = struct{}{}
	}
	k.wg.Add(1)
}

// done records the outcome of the mark of rows.
func (k *marking) done(rows []Row, err error) {
	k.mu.Lock()
	for _, r := range rows {
		delete(k.seqs, r.Seq)
	}
	if k.freed != nil {
		close(k.freed)
		k.freed = nil
	}
	k.mu.Unlock()
	if err != nil {
		k.failed.Store(true)
	}
	k.wg.Done()
}

// room waits until n more rows fit beside those being marked, limit in all
// (any number fits beside none), or ctx ends.
func (k *marking) room(ctx context.Context, n, limit int) error {
	for {
		k.mu.Lock()
		if len(k.seqs) == 0 || len(k.seqs)+n <= limit {
			k.mu.Unlock()
			return nil
		}
		if k.freed == nil {
			k.freed = make(chan struct{})
		}
		freed := k.freed
		k.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// inFlight returns the seqs being marked now (nil: none). A poll must be
// filtered with the set taken before it: a mark that commits while the poll
// runs leaves its rows in the poll's snapshot but no longer in the set.
func (k *marking) inFlight() map[int64]struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.seqs) == 0 {
		return nil
	}
	return maps.Clone(k.seqs)
}

// skip returns rows less those in inFlight, in order; rows itself when
// inFlight is empty.
func skip(rows []Row, inFlight map[int64]struct{}) []Row {
	if len(inFlight) == 0 {
		return rows
	}
	var out []Row
	for _, r := range rows {
		if _, ok := inFlight[r.Seq]; !ok {
			out = append(out, r)
		}
	}
	return out
}

// run marks what rounds hand it until stop closes (after the last round
// ended), on ctx, which ends a transaction under way only at a hard
// shutdown.
func (m *marker) run(ctx context.Context, stop <-chan struct{}) {
	defer m.discard()
	spacing := time.NewTimer(0)
	defer spacing.Stop()
	var last time.Time
	for {
		var first *markRequest
		select {
		case first = <-m.reqs:
		case <-stop:
			return
		}
		batch, n := []*markRequest{first}, len(first.rows)
		add := func(r *markRequest) {
			batch = append(batch, r)
			n += len(r.rows)
		}
	more:
		for n < markRows {
			select {
			case r := <-m.reqs:
				add(r)
			default:
				break more
			}
		}
		if wait := time.Until(last.Add(m.spacing)); n < markEager && wait > 0 {
			spacing.Reset(wait)
		gather:
			for n < markEager {
				select {
				case r := <-m.reqs:
					add(r)
				case <-spacing.C:
					break gather
				case <-stop:
					break gather
				}
			}
			spacing.Stop()
		}
		// A round that stopped waiting would cut the others' transaction
		// short with its deadline: leave it out.
		now := time.Now()
		last = now
		live := batch[:0]
		for _, r := range batch {
			if !r.deadline.IsZero() && !now.Before(r.deadline) {
				r.done <- context.DeadlineExceeded
				continue
			}
			live = append(live, r)
		}
		if batch = live; len(batch) == 0 {
			continue
		}
		err := m.write(ctx, batch)
		if err != nil && len(batch) > 1 {
			// One round's failure must not fail the others: each alone.
			for _, r := range batch {
				r.done <- m.write(ctx, []*markRequest{r})
			}
			continue
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// write marks the batch's rows in one transaction, by the earliest
// deadline among them.
func (m *marker) write(ctx context.Context, batch []*markRequest) error {
	var deadline time.Time
	for _, r := range batch {
		if !r.deadline.IsZero() && (deadline.IsZero() || r.deadline.Before(deadline)) {
			deadline = r.deadline
		}
	}
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	reused := m.conn != nil
	err := m.inTx(ctx, batch)
	if err != nil && reused && ctx.Err() == nil {
		// A connection held idle may have been cut (wait_timeout, a proxy):
		// marking is idempotent, so try once more on a fresh one.
		m.discard()
		err = m.inTx(ctx, batch)
	}
	if err != nil {
		// The connection may be broken or mid-transaction: start afresh.
		m.discard()
	}
	return err
}

// inTx marks the batch's rows, source by source, in one transaction on the
// marker's connection, opening it first when needed; or with the one
// statement of a SingleMark source, which autocommit commits.
func (m *marker) inTx(ctx context.Context, batch []*markRequest) error {
	if m.conn == nil {
		c, err := m.db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		m.conn = c
		if _, err := c.ExecContext(ctx, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"); err != nil {
			return fmt.Errorf("set isolation: %w", err)
		}
		// Whatever the DSN says: a lone marking statement commits itself.
		if _, err := c.ExecContext(ctx, "SET SESSION autocommit = 1"); err != nil {
			return fmt.Errorf("set autocommit: %w", err)
		}
	}
	var order []Source
	bySrc := map[Source][]Row{}
	for _, r := range batch {
		if _, ok := bySrc[r.src]; !ok {
			order = append(order, r.src)
		}
		bySrc[r.src] = append(bySrc[r.src], r.rows...)
	}
	if sm, ok := order[0].(SingleMark); ok && len(order) == 1 && sm.SingleMark(len(bySrc[order[0]])) {
		return order[0].Delivered(ctx, m.conn, bySrc[order[0]])
	}
	return sqlx.RunInTx(ctx, m.conn, nil, func(tx *sql.Tx) error {
		for _, src := range order {
			if err := src.Delivered(ctx, tx, bySrc[src]); err != nil {
				return err
			}
		}
		return nil
	})
}

// discard closes the marker's connection for good: returning it to the pool
// would hand its session's isolation to other work.
func (m *marker) discard() {
	if m.conn == nil {
		return
	}
	_ = m.conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = m.conn.Close()
	m.conn = nil
}
