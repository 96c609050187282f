package relay

import (
	"time"
)

// Hook receives some of the engine's measurements: any value implementing one
// or more of the hook interfaces below (PublishedHook, …); the engine calls the
// methods a hook has and skips the others, so a hook interface added later
// breaks no existing hook (franz-go's kgo.Hook works the same way).
// txmsgprom.Relay implements them all. Hooks must be safe for concurrent use and
// must not block.
type Hook any

// PublishedHook counts n records of source acknowledged by Kafka on topic.
type PublishedHook interface {
	Published(source, topic string, n int)
}

// PublishLatencyHook observes one produce round trip of a round: the next
// request of each of its partitions, sent together.
type PublishLatencyHook interface {
	PublishLatency(source string, d time.Duration)
}

// DeadLetteredHook counts n messages of source moved to the dead-letter table.
type DeadLetteredHook interface {
	DeadLettered(source, topic string, n int)
}

// ErrorHook counts a failure by kind: "poll", "publish", "mark", "lease",
// "dead_letter", "purge", "backlog".
type ErrorHook interface {
	Error(source, kind string)
}

// LeasesHeldHook reports how many shards of source this engine owns.
type LeasesHeldHook interface {
	LeasesHeld(source string, n int)
}

// BacklogHook reports pending rows of source and the age of the oldest.
// For the outbox, pending is exact up to 10,000 rows and above that the span
// of pending seqs (an upper bound), so that reading it costs the same
// whatever the backlog.
type BacklogHook interface {
	Backlog(source string, pending int64, oldestAge time.Duration)
}

// PurgedHook counts delivered rows deleted by the retention job.
type PurgedHook interface {
	Purged(source string, n int64)
}

// hooks hands each measurement to the hooks that implement its interface.
type hooks []Hook

func (hs hooks) Published(source, topic string, n int) {
	for _, h := range hs {
		if h, ok := h.(PublishedHook); ok {
			h.Published(source, topic, n)
		}
	}
}

func (hs hooks) PublishLatency(source string, d time.Duration) {
	for _, h := range hs {
		if h, ok := h.(PublishLatencyHook); ok {
			h.PublishLatency(source, d)
		}
	}
}

func (hs hooks) DeadLettered(source, topic string, n int) {
	for _, h := range hs {
		if h, ok := h.(DeadLetteredHook); ok {
			h.DeadLettered(source, topic, n)
		}
	}
}

func (hs hooks) Error(source, kind string) {
	for _, h := range hs {
		if h, ok := h.(ErrorHook); ok {
			h.Error(source, kind)
		}
	}
}

func (hs hooks) LeasesHeld(source string, n int) {
	for _, h := range hs {
		if h, ok := h.(LeasesHeldHook); ok {
			h.LeasesHeld(source, n)
		}
	}
}

func (hs hooks) Backlog(source string, pending int64, oldestAge time.Duration) {
	for _, h := range hs {
		if h, ok := h.(BacklogHook); ok {
			h.Backlog(source, pending, oldestAge)
		}
	}
}

func (hs hooks) Purged(source string, n int64) {
	for _, h := range hs {
		if h, ok := h.(PurgedHook); ok {
			h.Purged(source, n)
		}
	}
}
