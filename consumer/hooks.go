package consumer

import (
	"time"
)

// Hook receives some of the consumer's measurements: any value implementing one
// or more of the hook interfaces below (ConsumedHook, …); the consumer calls the
// methods a hook has and skips the others, so a hook interface added later
// breaks no existing hook (franz-go's kgo.Hook works the same way).
// txmsgprom.Consumer implements them all. Hooks must be safe for concurrent use and
// must not block.
type Hook any

// ConsumedHook counts a message handled successfully (acknowledged).
type ConsumedHook interface {
	Consumed(group, topic string, partition int)
}

// DuplicateHook counts a message skipped because its inbox row existed.
type DuplicateHook interface {
	Duplicate(group, topic string)
}

// FailedHook counts one failed handler attempt.
type FailedHook interface {
	Failed(group, topic string)
}

// RetriedHook counts a message scheduled for another attempt.
type RetriedHook interface {
	Retried(group, topic string)
}

// DeadLetteredHook counts a message written to the dead-letter topic.
type DeadLetteredHook interface {
	DeadLettered(group, topic string)
}

// HandlerLatencyHook observes one handler attempt (with its transaction).
type HandlerLatencyHook interface {
	HandlerLatency(group, topic string, d time.Duration)
}

// LagHook reports the records of a partition behind the last fetched one,
// from the high watermark of the fetch response.
type LagHook interface {
	Lag(group, topic string, partition int, lag int64)
}

// hooks hands each measurement to the hooks that implement its interface.
type hooks []Hook

func (hs hooks) Consumed(group, topic string, partition int) {
	for _, h := range hs {
		if h, ok := h.(ConsumedHook); ok {
			h.Consumed(group, topic, partition)
		}
	}
}

func (hs hooks) Duplicate(group, topic string) {
	for _, h := range hs {
		if h, ok := h.(DuplicateHook); ok {
			h.Duplicate(group, topic)
		}
	}
}

func (hs hooks) Failed(group, topic string) {
	for _, h := range hs {
		if h, ok := h.(FailedHook); ok {
			h.Failed(group, topic)
		}
	}
}

func (hs hooks) Retried(group, topic string) {
	for _, h := range hs {
		if h, ok := h.(RetriedHook); ok {
			h.Retried(group, topic)
		}
	}
}

func (hs hooks) DeadLettered(group, topic string) {
	for _, h := range hs {
		if h, ok := h.(DeadLetteredHook); ok {
			h.DeadLettered(group, topic)
		}
	}
}

func (hs hooks) HandlerLatency(group, topic string, d time.Duration) {
	for _, h := range hs {
		if h, ok := h.(HandlerLatencyHook); ok {
			h.HandlerLatency(group, topic, d)
		}
	}
}

func (hs hooks) Lag(group, topic string, partition int, lag int64) {
	for _, h := range hs {
		if h, ok := h.(LagHook); ok {
			h.Lag(group, topic, partition, lag)
		}
	}
}
