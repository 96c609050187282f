package broker

import (
	"time"

	"github.com/txmsg/txmsg/broker/halfmsg"
)

// Hook receives some of the broker's measurements: any value implementing
// one or more of the hook interfaces below (CheckedHook, …); the broker calls
// the methods a hook has and skips the others, so a hook interface added
// later breaks no existing hook (franz-go's kgo.Hook works the same way).
// txmsgprom.Broker implements them all. Hooks must be safe for concurrent
// use and must not block.
type Hook any

// CheckedHook counts one check-back by outcome ("commit", "rollback",
// "unknown", "error") and observes its latency.
type CheckedHook interface {
	Checked(outcome string, latency time.Duration)
}

// CheckErrorHook counts a failure of the check-back scanner itself by kind
// ("claim", "record").
type CheckErrorHook interface {
	CheckError(kind string)
}

// PreparedHook counts one prepared message.
type PreparedHook interface {
	Prepared()
}

// ResolvedHook counts one transition of a prepared (or discarded) message to
// committed, rolled_back or discarded, by "producer", "checkback" or
// "operator".
type ResolvedHook interface {
	Resolved(to halfmsg.State, by string)
}

// PreparedBacklogHook reports prepared messages and the age of the oldest.
type PreparedBacklogHook interface {
	PreparedBacklog(n int64, oldestAge time.Duration)
}

// hooks hands each measurement to the hooks that implement its interface.
type hooks []Hook

func (hs hooks) Checked(outcome string, latency time.Duration) {
	for _, h := range hs {
		if h, ok := h.(CheckedHook); ok {
			h.Checked(outcome, latency)
		}
	}
}

func (hs hooks) CheckError(kind string) {
	for _, h := range hs {
		if h, ok := h.(CheckErrorHook); ok {
			h.CheckError(kind)
		}
	}
}

func (hs hooks) Prepared() {
	for _, h := range hs {
		if h, ok := h.(PreparedHook); ok {
			h.Prepared()
		}
	}
}

func (hs hooks) Resolved(to halfmsg.State, by string) {
	for _, h := range hs {
		if h, ok := h.(ResolvedHook); ok {
			h.Resolved(to, by)
		}
	}
}

func (hs hooks) PreparedBacklog(n int64, oldestAge time.Duration) {
	for _, h := range hs {
		if h, ok := h.(PreparedBacklogHook); ok {
			h.PreparedBacklog(n, oldestAge)
		}
	}
}
