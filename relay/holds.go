package relay

import (
	"strconv"
	"time"

	"github.com/txmsg/txmsg/internal/backoff"
)

// holds are a shard worker's backoffs, one per thing Kafka failed on: a
// topic, a partition, or a (topic, key) whose message was refused. Rows whose
// topic, partition or key is held stay pending, and so do the later rows of
// their key, while the rest of the shard flows: one failing topic must not
// slow every key of its shard. Only the worker's goroutine uses them.
type holds struct {
	policy backoff.Policy
	// slow spaces the attempts at a topic the cluster refuses as a whole
	// (unknown, not authorized): only an operator can fix that, so its
	// attempts should span seconds, not a few quick retries.
	slow backoff.Policy
	m    map[string]*hold
}

// hold is one backoff: how many failures in a row, and until when (on the
// engine's monotonic clock) nothing is tried.
type hold struct {
	failures int
	until    time.Duration
}

func newHolds(p backoff.Policy) *holds {
	return &holds{policy: p, slow: backoff.Policy{Initial: p.Max, Max: p.Max}, m: map[string]*hold{}}
}

// Names of the things held. Topic names cannot hold '|', so the names do
// not collide; the key comes last, as any bytes.
func topicHold(topic string) string { return "t|" + topic }

func partitionHold(topic string, partition int) string {
	return "p|" + topic + "|" + strconv.Itoa(partition)
}

func keyHold(topic string, key []byte) string { return "k|" + topic + "|" + string(key) }

// rowKeyHold names what r's order depends on: its (topic, key), or for a
// keyless row, which has no order to keep, the row alone.
func rowKeyHold(r *Row) string {
	if r.Key == nil {
		return "i|" + r.ID
	}
	return keyHold(r.Topic, r.Key)
}

// active says whether name is held at now.
func (h *holds) active(name string, now time.Duration) bool {
	x, ok := h.m[name]
	return ok && x.until > now
}

// fail records one more failure of name and holds it for the next backoff;
// it returns the failures in a row.
func (h *holds) fail(name string, now time.Duration) int { return h.failWith(h.policy, name, now) }

// refuseTopic holds topic, which the cluster refused as a whole, for the
// longest backoff.
func (h *holds) refuseTopic(topic string, now time.Duration) {
	h.failWith(h.slow, topicHold(topic), now)
}

func (h *holds) failWith(p backoff.Policy, name string, now time.Duration) int {
	x, ok := h.m[name]
	if !ok {
		x = &hold{}
		h.m[name] = x
	}
	x.failures++
	x.until = now + p.Delay(x.failures)
	return x.failures
}

// clear forgets name's failures.
func (h *holds) clear(name string) { delete(h.m, name) }

// next returns how long until the first active hold ends (0 when none is),
// and forgets holds ended longer than the longest backoff ago: what failed
// then starts its backoff afresh.
func (h *holds) next(now time.Duration) time.Duration {
	var first time.Duration
	for name, x := range h.m {
		switch {
		case x.until > now:
			if first == 0 || x.until-now < first {
				first = x.until - now
			}
		case now-x.until > h.policy.Max:
			delete(h.m, name)
		}
	}
	return first
}
