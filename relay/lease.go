package relay

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/txmsg/txmsg/internal/sqlx"
)

// Lease SQL. Expiry is computed with the database's clock, so relays on hosts
// with skewed clocks still agree on who owns a shard.
const (
	ensureLeases = `INSERT IGNORE INTO txmsg_relay_leases (source, shard, owner, version, expires_at) VALUES `
	joinMembers  = `INSERT INTO txmsg_relay_members (source, owner, expires_at)
VALUES (?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)
ON DUPLICATE KEY UPDATE expires_at = VALUES(expires_at)`
	countMembers = `SELECT COUNT(*) FROM txmsg_relay_members WHERE source = ? AND expires_at > UTC_TIMESTAMP(6)`
	pruneMembers = `DELETE FROM txmsg_relay_members WHERE source = ? AND expires_at < UTC_TIMESTAMP(6) - INTERVAL 1 HOUR`
	leaveMembers = `DELETE FROM txmsg_relay_members WHERE owner = ?`
	renewLeases  = `UPDATE txmsg_relay_leases SET expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND WHERE source = ? AND owner = ? AND shard IN (`
	ownedLeases  = `SELECT shard, version FROM txmsg_relay_leases WHERE source = ? AND owner = ?`
	freeLeases   = `SELECT shard FROM txmsg_relay_leases WHERE source = ? AND (owner = '' OR expires_at < UTC_TIMESTAMP(6)) ORDER BY shard`
	// version = LAST_INSERT_ID(version + 1) hands the new fencing version
	// back in the OK packet: the claim and its version are one statement.
	claimLease = `UPDATE txmsg_relay_leases SET owner = ?, version = LAST_INSERT_ID(version + 1),
  expires_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND
WHERE source = ? AND shard = ? AND (owner = '' OR expires_at < UTC_TIMESTAMP(6))`
	// holdLease is LOCK IN SHARE MODE, not FOR SHARE: MariaDB has only the
	// former, and MySQL 8 accepts both.
	holdLease    = `SELECT 1 FROM txmsg_relay_leases WHERE source = ? AND shard = ? AND owner = ? AND version = ? LOCK IN SHARE MODE`
	releaseLease = `UPDATE txmsg_relay_leases SET owner = '', expires_at = UTC_TIMESTAMP(6) WHERE source = ? AND shard = ? AND owner = ? AND version = ?`
)

// shardWorker is one leased shard and the goroutine draining it.
type shardWorker struct {
	src     Source
	shard   int
	version int64
	// deadline (nanoseconds on the engine's monotonic clock) is when the
	// lease may have run out: the worker publishes nothing after it.
	deadline atomic.Int64
	// holds are the worker's backoffs; only its goroutine uses them.
	holds *holds
	// floor is the seq below which the shard holds nothing more to deliver
	// (Seeker sources), and swept when the worker last read the shard from
	// its start; only its goroutine uses them.
	floor int64
	swept time.Duration
	// backlogged is set when the last read was full (see from); only the
	// worker's goroutine uses it.
	backlogged bool
	// synced is set while the worker may publish handed rows in place of
	// reading its shard: it read the shard completely at polledAt (engine
	// clock, when the read was sent) and has delivered everything it took
	// since; polled is what its reads returned. Only its goroutine uses
	// them (see handoff).
	synced   bool
	polledAt time.Duration
	polled   polled
	// marking holds the delivered rows whose mark is under way.
	marking   marking
	stop      context.CancelFunc
	releasing bool
	done      chan struct{}
}

// coordinator owns the leases of one Engine. Only its run goroutine touches
// workers; workers only read their deadline.
type coordinator struct {
	e       *Engine
	hard    context.Context
	wg      *sync.WaitGroup
	workers map[string]map[int]*shardWorker
}

func newCoordinator(e *Engine, hard context.Context, wg *sync.WaitGroup) *coordinator {
	c := &coordinator{e: e, hard: hard, wg: wg, workers: map[string]map[int]*shardWorker{}}
	for _, s := range e.sources {
		c.workers[s.Name()] = map[int]*shardWorker{}
	}
	return c
}

// run heartbeats until ctx ends, then tells every worker to stop. Workers
// release their own leases as they exit.
func (c *coordinator) run(ctx context.Context) error {
	e := c.e
	for _, s := range e.sources {
		if err := c.ensure(ctx, s); err != nil {
			return err
		}
	}
	c.wg.Add(4)
	go func() {
		defer c.wg.Done()
		c.backlogLoop(ctx)
	}()
	go func() {
		defer c.wg.Done()
		c.watchBusy(ctx)
	}()
	go func() {
		defer c.wg.Done()
		c.watchHorizon(ctx)
	}()
	go func() {
		defer c.wg.Done()
		c.watchChanges(ctx)
	}()
	purge, err := c.startPurge(ctx)
	if err != nil {
		return err
	}
	defer purge()
	tick := time.NewTicker(e.cfg.Heartbeat)
	defer tick.Stop()
	for {
		err := c.round(ctx)
		if err != nil {
			e.log.Warn("relay lease round failed", slog.String("owner", e.cfg.Owner), slog.Any("error", err))
		}
		// Not ready while leases cannot be renewed: /readyz then says so.
		e.ready.Store(err == nil)
		select {
		case <-ctx.Done():
			for _, ws := range c.workers {
				for _, w := range ws {
					w.stop()
				}
			}
			return nil
		case <-tick.C:
		}
	}
}

func (c *coordinator) ensure(ctx context.Context, s Source) error {
	n := c.e.cfg.Shards
	args := make([]any, 0, 2*n)
	for i := 0; i < n; i++ {
		args = append(args, s.Name(), i)
	}
	q := ensureLeases + strings.TrimSuffix(strings.Repeat("(?, ?, '', 0, UTC_TIMESTAMP(6)),", n), ",")
	if _, err := c.e.db.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("relay: create leases of %s: %w", s.Name(), err)
	}
	return nil
}

// round renews held leases, drops lost ones, and moves toward a fair share:
// ceil(shards / live engines) per engine. Its statements (qctx) end by the
// deadline it gives the workers: a round stuck on a lock or a silent
// database would otherwise hold /readyz at its last answer while the
// workers' deadlines run out, and one that ends later renews nothing they
// could use. Workers it starts live on ctx.
func (c *coordinator) round(ctx context.Context) error {
	e := c.e
	qctx, cancel := context.WithTimeout(ctx, e.cfg.LeaseTTL-e.cfg.Heartbeat)
	defer cancel()
	start := e.since()
	ttl := e.cfg.LeaseTTL.Microseconds()
	// The local deadline ends a heartbeat before the database's expiry, so a
	// worker stops publishing before anyone else may take its shard.
	deadline := int64(start + e.cfg.LeaseTTL - e.cfg.Heartbeat)
	for _, s := range e.sources {
		name := s.Name()
		ws := c.workers[name]
		for shard, w := range ws {
			select {
			case <-w.done:
				delete(ws, shard)
			default:
			}
		}
		if _, err := e.db.ExecContext(qctx, joinMembers, name, e.cfg.Owner, ttl); err != nil {
			e.metrics.Error(name, "lease")
			return fmt.Errorf("relay: heartbeat %s: %w", name, err)
		}
		var members int
		if err := e.db.QueryRowContext(qctx, countMembers, name).Scan(&members); err != nil {
			e.metrics.Error(name, "lease")
			return fmt.Errorf("relay: count members of %s: %w", name, err)
		}
		if _, err := e.db.ExecContext(qctx, pruneMembers, name); err != nil {
			return fmt.Errorf("relay: prune members of %s: %w", name, err)
		}
		if err := c.renew(qctx, s, deadline); err != nil {
			e.metrics.Error(name, "lease")
			return err
		}
		fair := (e.cfg.Shards + max(members, 1) - 1) / max(members, 1)
		var active []int
		for shard, w := range ws {
			if !w.releasing {
				active = append(active, shard)
			}
		}
		sort.Ints(active)
		held := len(active)
		for ; held > fair; held-- {
			w := ws[active[held-1]]
			w.releasing = true
			w.stop()
			e.log.Info("relay releasing shard for rebalance", slog.String("source", name), slog.Int("shard", w.shard))
		}
		if held < fair {
			n, err := c.claim(ctx, qctx, s, fair-held, deadline)
			held += n
			if err != nil {
				e.metrics.Error(name, "lease")
				return err
			}
		}
		e.metrics.LeasesHeld(name, held)
	}
	return nil
}

// renew extends the leases of this engine's running workers for s and stops
// workers whose lease another engine took. Only shards with a worker are
// renewed: a row that merely names this owner (left by a crashed process that
// had the same relay.owner, or by a failed release) must expire so that it
// can be claimed again.
func (c *coordinator) renew(ctx context.Context, s Source, deadline int64) error {
	e := c.e
	name := s.Name()
	ws := c.workers[name]
	if len(ws) == 0 {
		return nil
	}
	args := []any{e.cfg.LeaseTTL.Microseconds(), name, e.cfg.Owner}
	for shard := range ws {
		args = append(args, shard)
	}
	q := renewLeases + sqlx.Placeholders(len(ws)) + ")"
	if _, err := e.db.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("relay: renew leases of %s: %w", name, err)
	}
	rows, err := e.db.QueryContext(ctx, ownedLeases, name, e.cfg.Owner)
	if err != nil {
		return fmt.Errorf("relay: read leases of %s: %w", name, err)
	}
	owned := map[int]int64{}
	for rows.Next() {
		var shard int
		var version int64
		if err := rows.Scan(&shard, &version); err != nil {
			rows.Close()
			return fmt.Errorf("relay: read leases of %s: %w", name, err)
		}
		owned[shard] = version
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("relay: read leases of %s: %w", name, err)
	}
	for shard, w := range c.workers[name] {
		if v, ok := owned[shard]; ok && v == w.version {
			w.deadline.Store(deadline)
			continue
		}
		if !w.releasing {
			e.log.Warn("relay lost shard lease", slog.String("source", name), slog.Int("shard", shard))
			w.releasing = true
			w.stop()
		}
	}
	return nil
}

// claim takes up to want free or expired shards of s and starts their
// workers on ctx; qctx bounds its statements.
func (c *coordinator) claim(ctx, qctx context.Context, s Source, want int, deadline int64) (int, error) {
	e := c.e
	name := s.Name()
	rows, err := e.db.QueryContext(qctx, freeLeases, name)
	if err != nil {
		return 0, fmt.Errorf("relay: find free shards of %s: %w", name, err)
	}
	var free []int
	for rows.Next() {
		var shard int
		if err := rows.Scan(&shard); err != nil {
			rows.Close()
			return 0, fmt.Errorf("relay: find free shards of %s: %w", name, err)
		}
		if shard < e.cfg.Shards {
			if _, busy := c.workers[name][shard]; !busy {
				free = append(free, shard)
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("relay: find free shards of %s: %w", name, err)
	}
	got := 0
	for _, shard := range free {
		if got == want || qctx.Err() != nil {
			break
		}
		version, err := c.claimOne(ctx, name, shard)
		if err != nil {
			return got, err
		}
		if version == 0 {
			continue
		}
		// A worker started after ctx ended stops at once and releases.
		c.start(ctx, s, shard, version, deadline)
		got++
	}
	return got, nil
}

// claimOne takes shard of source name if it is free or expired and returns
// its new fencing version, or 0 when another engine holds it. The statement
// is not canceled by shutdown: a claim the database made but whose answer
// was lost would leave a lease that no worker releases until it expires.
func (c *coordinator) claimOne(ctx context.Context, name string, shard int) (int64, error) {
	e := c.e
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.Heartbeat)
	defer cancel()
	res, err := e.db.ExecContext(sctx, claimLease, e.cfg.Owner, e.cfg.LeaseTTL.Microseconds(), name, shard)
	if err != nil {
		return 0, fmt.Errorf("relay: claim shard %d of %s: %w", shard, name, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return 0, err
	}
	version, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("relay: claim shard %d of %s: read its version: %w", shard, name, err)
	}
	return version, nil
}

// start runs a worker for a freshly claimed shard.
func (c *coordinator) start(ctx context.Context, s Source, shard int, version int64, deadline int64) {
	wctx, cancel := context.WithCancel(ctx)
	w := &shardWorker{src: s, shard: shard, version: version, holds: newHolds(c.e.retryPolicy()), stop: cancel,
		done: make(chan struct{})}
	w.deadline.Store(deadline)
	c.workers[s.Name()][shard] = w
	c.e.log.Info("relay claimed shard", slog.String("source", s.Name()), slog.Int("shard", shard), slog.Int64("version", version))
	in := &c.e.inboxes[s.Name()][shard]
	in.reset(true)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(w.done)
		defer cancel()
		c.e.work(wctx, c.hard, w)
		in.reset(false)
		// The next owner must not read rows whose DELETE is under way.
		w.marking.wg.Wait()
		c.release(w)
	}()
}

// release gives w's lease back, unless another engine took it meanwhile (the
// fencing version no longer matches, and the update changes nothing).
func (c *coordinator) release(w *shardWorker) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.hard), 5*time.Second)
	defer cancel()
	if _, err := c.e.db.ExecContext(ctx, releaseLease, w.src.Name(), w.shard, c.e.cfg.Owner, w.version); err != nil {
		c.e.log.Warn("relay release lease failed", slog.String("source", w.src.Name()), slog.Int("shard", w.shard), slog.Any("error", err))
	}
}

// leave removes this engine from the member table so the others rebalance at
// once. Called after every worker has returned.
func (c *coordinator) leave() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.hard), 5*time.Second)
	defer cancel()
	if _, err := c.e.db.ExecContext(ctx, leaveMembers, c.e.cfg.Owner); err != nil {
		c.e.log.Warn("relay leave failed", slog.Any("error", err))
	}
}
