package relay

import (
	"context"
	"log/slog"
	"time"
)

// The change probe's bounds. A gap (seqs below the highest seen that have
// not arrived) is asked about again until its rows arrive, every seq in it
// is final (the horizon passed it), the gap timeout passes (gapTimeout, or
// PollMax when longer), or maxGaps newer gaps push it out: rows of a
// transaction that commits later than that are found by their shard's own
// polling, at most Config.PollMax apart.
const (
	arrivalsLimit = 1000
	gapTimeout    = 2 * time.Second
	maxGaps       = 64
)

// Once no row arrived and no gap was open for idleAfter, the probe looks
// less and less often, up to idleProbe apart (or Config.PollMin when that
// is longer), and back every PollMin at the first arrival: an idle relay
// makes a few dozen statements a second instead of one per PollMin (500),
// and only the first row after a quiet second waits up to idleProbe to be
// noticed: rows that come less than a second apart are noticed as before.
const (
	idleAfter = time.Second
	idleProbe = 25 * time.Millisecond
)

// gap is seqs not seen yet below the highest seen, since the probe at since
// (engine clock).
type gap struct {
	SeqRange
	since time.Duration
}

// tail is what the change probe of one source has seen. Only the
// watchChanges goroutine uses it.
type tail struct {
	// timeout is how long a gap is asked about.
	timeout time.Duration
	// started is set once after held the source's newest seq: the rows
	// below it are history, not gaps.
	started bool
	// after is the highest seq seen.
	after int64
	// gaps are in ascending seq, hence in the order they were found.
	gaps []gap
	// lost is the highest seq the probe stopped asking about before it was
	// final (a gap dropped, or below the first probe): a row of it may
	// still commit unseen. Until the settled seq passes it, the probe's
	// rows are not handed over (see handoff).
	lost int64
	// chained is set while every probe since chain (engine clock, when it
	// was sent) saw every seq that could still commit.
	chained bool
	chain   time.Duration
}

// ranges are the gaps to ask about again.
func (t *tail) ranges() []SeqRange {
	out := make([]SeqRange, len(t.gaps))
	for i, g := range t.gaps {
		out[i] = g.SeqRange
	}
	return out
}

// observe records the arrivals (ascending seq) of a probe at now, and drops
// the gaps that are settled (below settled), too old, or too many.
func (t *tail) observe(as []Arrival, now time.Duration, settled int64) {
	for _, a := range as {
		switch {
		case a.Seq > t.after:
			if a.Seq > t.after+1 {
				t.gaps = append(t.gaps, gap{SeqRange{t.after + 1, a.Seq - 1}, now})
			}
			t.after = a.Seq
		default:
			t.fill(a.Seq)
		}
	}
	kept := t.gaps[:0]
	for _, g := range t.gaps {
		switch {
		case g.To < settled:
			continue
		case now-g.since > t.timeout:
			t.lost = max(t.lost, g.To)
			continue
		}
		if g.From < settled {
			g.From = settled
		}
		kept = append(kept, g)
	}
	if n := len(kept) - maxGaps; n > 0 {
		t.lost = max(t.lost, kept[n-1].To)
		kept = kept[n:]
	}
	t.gaps = kept
}

// link records whether the probe sent at start, which read settled before
// it, could see every seq that may still commit, and reports whether its
// rows may be handed over.
func (t *tail) link(start time.Duration, settled int64) bool {
	switch {
	case t.lost > 0 && t.lost >= settled:
		t.chained = false
	case !t.chained:
		// Rows of the lost seqs committed before this probe; a worker that
		// read its shard since has them.
		t.chained, t.chain = true, start
	}
	return t.chained
}

// fill takes seq out of the gap holding it.
func (t *tail) fill(seq int64) {
	for i, g := range t.gaps {
		if seq < g.From || seq > g.To {
			continue
		}
		var parts []gap
		if seq > g.From {
			parts = append(parts, gap{SeqRange{g.From, seq - 1}, g.since})
		}
		if seq < g.To {
			parts = append(parts, gap{SeqRange{seq + 1, g.To}, g.since})
		}
		t.gaps = append(t.gaps[:i], append(parts, t.gaps[i+1:]...)...)
		return
	}
}

// watchChanges wakes the worker of a shard as soon as a row of it arrives,
// probing every PollMin (less often when idle: see idleAfter) each source
// that implements Changes, and asking
// again about gaps for rows that commit after later ones (see tail). It
// also warns about rows whose shard is beyond Config.Shards: no lease
// covers them, so they would never be delivered.
func (c *coordinator) watchChanges(ctx context.Context) {
	e := c.e
	tails := map[string]*tail{}
	every := max(e.cfg.PollMin, time.Millisecond)
	wait, quiet := every, e.since()
	// A ticker, not a sleep after each look: looks start wait apart however
	// long one takes, and the busy cadence costs no timer per look.
	tick := time.NewTicker(wait)
	defer tick.Stop()
	for {
		busy := false
		for _, s := range e.sources {
			ch, ok := s.(Changes)
			if !ok {
				continue
			}
			t := tails[s.Name()]
			if t == nil {
				t = &tail{timeout: max(gapTimeout, e.cfg.PollMax)}
				tails[s.Name()] = t
			}
			n, err := c.probe(ctx, ch, t)
			if err != nil {
				// The shards' own polling carries on meanwhile.
				if ctx.Err() == nil {
					e.metrics.Error(s.Name(), "poll")
					e.log.Debug("relay change probe failed", slog.String("source", s.Name()), slog.Any("error", err))
				}
			}
			busy = busy || n > 0 || len(t.gaps) > 0
		}
		next := wait
		switch now := e.since(); {
		case busy:
			next, quiet = every, now
		case now-quiet >= idleAfter:
			next = min(2*wait, max(idleProbe, every))
		}
		if next != wait {
			wait = next
			tick.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe looks for the arrivals of one source, wakes their shards and
// returns how many arrived. It
// starts from the source's newest seq (older rows are the shards' first
// polls' business); when more rows arrived than one probe lists, the next
// one goes on from the last listed.
func (c *coordinator) probe(ctx context.Context, ch Changes, t *tail) (arrived int, err error) {
	e := c.e
	if !t.started {
		last, err := ch.Newest(ctx, e.db)
		if err != nil {
			return 0, err
		}
		// Seqs below it may belong to transactions still running.
		t.after, t.lost, t.started = last, last, true
	}
	// Read before the probe: a gap below it that is still open after the
	// probe's snapshot cannot be settled yet.
	settled := e.settled[ch.Name()].Load()
	start := e.since()
	n := e.probesSent.Add(1)
	defer e.probesDone.Store(n)
	var as []Arrival
	var rows []Row
	ho, handover := ch.(Handover)
	var whole []int
	if handover {
		whole = e.ownShards(ch.Name())
		// Its rows are published: committed ones only, as a poll reads.
		err = e.consistently(ctx, !e.pollInTx, func(q Querier) error {
			var err error
			rows, err = ho.ArrivalRows(ctx, q, t.after, t.ranges(), whole, Limit{Rows: arrivalsLimit, Bytes: e.cfg.BatchBytes})
			return err
		})
		as = make([]Arrival, len(rows))
		for i, r := range rows {
			as[i] = Arrival{Seq: r.Seq, Shard: r.Shard}
		}
	} else {
		as, err = ch.Arrivals(ctx, e.db, t.after, t.ranges(), arrivalsLimit)
	}
	if err != nil {
		return 0, err
	}
	t.observe(as, e.since(), settled)
	// Every probe, arrivals or not: a gap dropped between two arrivals
	// breaks the chain all the same.
	handing := t.link(start, settled)
	if handover && len(as) > 0 {
		c.handOver(ch, as, rows, whole, n, handing, t.chain)
	}
	e.saw(ch.Name(), t.after)
	c.wakeArrivals(ch, as)
	return len(as), nil
}

// wakeArrivals wakes the shard of each arrival once.
func (c *coordinator) wakeArrivals(s Source, as []Arrival) {
	e := c.e
	woken := map[int]bool{}
	for _, a := range as {
		if woken[a.Shard] {
			continue
		}
		woken[a.Shard] = true
		if a.Shard >= e.cfg.Shards {
			c.strayShard(s, a.Shard)
			continue
		}
		e.Wake(s.Name(), a.Shard)
	}
}

// strayShard reports rows of s in a shard no lease covers.
func (c *coordinator) strayShard(s Source, shard int) {
	e := c.e
	e.metrics.Error(s.Name(), "shard_mismatch")
	e.log.Error("relay found rows of a shard no lease covers: relay.shards must equal the producers' shard count",
		slog.String("source", s.Name()), slog.Int("shard", shard), slog.Int("shards", e.cfg.Shards))
}
