package chaos

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
)

// Figures are one soak's results. The run passes when Lost, Phantom,
// Reorders, EffectsTwice and Stalled are all zero.
type Figures struct {
	// Committed counts messages whose business transaction committed (rows
	// of the business tables), Delivered those of them found in Kafka.
	Committed, Delivered int
	// Lost counts committed messages not found in Kafka (dead-lettered or
	// discarded ones included: in this soak no fault is permanent).
	Lost int
	// Phantom counts messages in Kafka whose business transaction did not
	// commit.
	Phantom int
	// Reorders counts messages whose first copy in Kafka came after the
	// first copy of a later message of their key.
	Reorders int
	// Duplicates counts copies in Kafka beyond the first; StaleDuplicates
	// those of them that came after the first copy of a later message of
	// their key (a consumer without the inbox sees the key go back).
	Duplicates, StaleDuplicates int
	// EffectsTwice counts messages whose effect a consumer applied twice.
	EffectsTwice int
	// Stalled counts shards still holding undelivered rows after the drain,
	// plus partitions with messages the consumers never applied.
	Stalled int
	// MaxDelay is the longest time from a business transaction to its
	// message's effect (to Kafka for the topic nobody consumes).
	MaxDelay time.Duration

	// DeadLettered and Discarded count lost messages in the relay's
	// dead-letter table and half messages check-back discarded.
	DeadLettered, Discarded int
	// Unapplied counts messages delivered to a consumed topic with no
	// effect and no dead letter; ConsumerDLQ messages consumers dead-lettered.
	Unapplied, ConsumerDLQ int
	// CommitsDropped counts half messages whose commit calls were dropped
	// on purpose,
	// Faults faults struck, Exits processes that exited unasked.
	CommitsDropped, Faults, Exits int
	// DrainTime is how long the drain took.
	DrainTime time.Duration
}

// OK says whether the run passed.
func (f Figures) OK() bool {
	return f.Lost == 0 && f.Phantom == 0 && f.Reorders == 0 && f.EffectsTwice == 0 && f.Stalled == 0
}

// String formats the figures as one line of key=value pairs.
func (f Figures) String() string {
	pairs := []struct {
		k string
		v any
	}{
		{"committed", f.Committed}, {"delivered", f.Delivered}, {"lost", f.Lost}, {"phantom", f.Phantom},
		{"reorders", f.Reorders}, {"duplicates", f.Duplicates}, {"stale_duplicates", f.StaleDuplicates},
		{"effects_twice", f.EffectsTwice},
		{"stalled", f.Stalled}, {"max_delay", f.MaxDelay.Round(time.Millisecond)},
		{"dead_lettered", f.DeadLettered}, {"discarded", f.Discarded}, {"unapplied", f.Unapplied},
		{"consumer_dlq", f.ConsumerDLQ}, {"commits_dropped", f.CommitsDropped}, {"faults", f.Faults},
		{"exits", f.Exits}, {"drain", f.DrainTime.Round(time.Millisecond)}, {"ok", f.OK()},
	}
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", p.k, p.v)
	}
	return b.String()
}

// examples logs the first few findings of each kind, and counts them by
// kind and topic, for diagnosis.
type examples struct {
	log     *slog.Logger
	seen    map[string]int
	byTopic map[string]int
}

func (e *examples) add(kind, topic string, attrs ...any) {
	e.byTopic[kind+"/"+topic]++
	if e.seen[kind]++; e.seen[kind] <= 5 {
		e.log.Warn(kind, append([]any{"topic", topic}, attrs...)...)
	}
}

// summary logs how many findings of each kind each topic had.
func (e *examples) summary() {
	attrs := []any{}
	for _, k := range slices.Sorted(maps.Keys(e.byTopic)) {
		attrs = append(attrs, k, e.byTopic[k])
	}
	e.log.Info("findings by kind and topic", attrs...)
}

// figures computes the figures from the evidence, logging examples of
// every violation.
func (ev *evidence) figures(log *slog.Logger) Figures {
	var f Figures
	ex := &examples{log: log, seen: map[string]int{}, byTopic: map[string]int{}}
	first := map[string]record{}
	phantoms := map[string]bool{}
	for _, topic := range slices.Sorted(maps.Keys(ev.logs)) {
		ev.scanLog(&f, ev.logs[topic], first, phantoms, ex)
	}
	f.Committed, f.Delivered, f.Phantom, f.ConsumerDLQ = len(ev.orders), len(first), len(phantoms), len(ev.consumerDLQ)
	for _, id := range slices.Sorted(maps.Keys(ev.orders)) {
		if _, ok := first[id]; ok {
			continue
		}
		f.Lost++
		o := ev.orders[id]
		f.DeadLettered += b2i(ev.deadLettered[id])
		f.Discarded += b2i(ev.discarded[id])
		ex.add("lost", o.topic, "id", id, "key", o.key, "n", o.n,
			"dead_lettered", ev.deadLettered[id], "discarded", ev.discarded[id])
	}
	ev.consumerFigures(&f, first, ex)
	f.Stalled += ev.pendingShards
	ex.summary()
	return f
}

// scanLog counts phantoms, duplicates and reorders in one topic's records.
// A key's order is checked on first copies only: a duplicate of an old
// message is not a reorder.
func (ev *evidence) scanLog(f *Figures, recs []record, first map[string]record, phantoms map[string]bool, ex *examples) {
	top := map[string]int{} // highest n delivered so far, by key
	for _, r := range recs {
		o, ok := ev.orders[r.id]
		if !ok {
			if !phantoms[r.id] {
				ex.add("phantom", r.topic, "id", r.id, "partition", r.partition, "offset", r.offset)
			}
			phantoms[r.id] = true
			continue
		}
		if prev, dup := first[r.id]; dup {
			f.Duplicates++
			ex.add("duplicate", r.topic, "id", r.id, "partition", r.partition, "offset", r.offset,
				"first_offset", prev.offset)
			if o.n < top[r.key] {
				f.StaleDuplicates++
				ex.add("stale duplicate", r.topic, "id", r.id, "partition", r.partition, "offset", r.offset,
					"first_offset", prev.offset, "n", o.n, "after_n", top[r.key])
			}
			continue
		}
		first[r.id] = r
		if n, seen := top[r.key]; seen && o.n < n {
			f.Reorders++
			ex.add("reorder", r.topic, "key", r.key, "partition", r.partition, "offset", r.offset,
				"n", o.n, "after_n", n, "id", r.id)
			continue
		}
		top[r.key] = o.n
	}
}

// consumerFigures counts effects applied twice, delivered messages the
// consumers never applied (and the partitions they stall), and the delay.
func (ev *evidence) consumerFigures(f *Figures, first map[string]record, ex *examples) {
	for id, e := range ev.effects {
		if e.applied > 1 {
			f.EffectsTwice++
			ex.add("effect applied twice", e.topic, "id", id, "applied", e.applied)
		}
	}
	stalled := map[string]bool{}
	slowest := ""
	for _, id := range slices.Sorted(maps.Keys(first)) {
		r := first[id]
		end := r.time
		e, applied := ev.effects[id]
		if applied {
			end = e.first
		}
		if d := end.Sub(ev.orders[id].created); d > f.MaxDelay {
			f.MaxDelay, slowest = d, id
		}
		if !ev.consumed[r.topic] || applied || ev.consumerDLQ[id] {
			continue
		}
		f.Unapplied++
		stalled[fmt.Sprintf("%s/%d", r.topic, r.partition)] = true
		ex.add("unapplied", r.topic, "id", id, "partition", r.partition, "offset", r.offset)
	}
	f.Stalled += len(stalled)
	if slowest != "" {
		ex.log.Info("slowest message", "id", slowest, "topic", first[slowest].topic, "delay", f.MaxDelay)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
