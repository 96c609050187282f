package demo

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/txmsg/txmsg/consumer"
)

// handle is the consumer's handler: it records the id and flags phantoms.
func (d *Demo) handle(_ context.Context, m consumer.Message) error {
	id := m.ID
	if !strings.HasPrefix(id, d.id+"-") {
		return nil // left over from an earlier run
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rolledBack[id] && !d.consumed[id] {
		d.phantoms = append(d.phantoms, id)
		d.log.Error("PHANTOM: consumed a message whose transaction rolled back", slog.String("msg_id", id))
	}
	d.consumed[id] = true
	return nil
}

// waitDrained waits until every committed message was consumed,
// Config.Drain passes or workers ends (the relay or the consumer failed).
func (d *Demo) waitDrained(workers context.Context, p *progress) {
	deadline := time.Now().Add(d.cfg.Drain)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for time.Now().Before(deadline) && workers.Err() == nil {
		c := d.counters()
		if c.missing == 0 {
			p.show(c.String())
			return
		}
		if time.Since(last) >= time.Second {
			p.show(c.String())
			last = time.Now()
		}
		<-tick.C
	}
	p.show(d.counters().String())
}

// relayCounter counts the records the relay published, for the progress
// line.
type relayCounter struct{ n *atomic.Int64 }

// Published implements relay.PublishedHook.
func (r relayCounter) Published(_, _ string, n int) { r.n.Add(int64(n)) }
