package broker

import (
	"time"

	"github.com/txmsg/txmsg/checkback"
)

// Metrics receives the broker's measurements; internal/metrics adapts it to
// Prometheus. Implementations must be safe for concurrent use and must not
// block.
type Metrics interface {
	checkback.Metrics
	// Prepared counts one prepared message.
	Prepared()
	// Resolved counts one transition of a prepared (or discarded) message
	// to committed, rolled_back or discarded, by "producer", "checkback" or
	// "operator".
	Resolved(to State, by string)
	// PreparedBacklog reports prepared messages and the age of the oldest.
	PreparedBacklog(n int64, oldestAge time.Duration)
}

// NopMetrics discards every measurement.
type NopMetrics struct{}

// Checked implements checkback.Metrics.
func (NopMetrics) Checked(string, time.Duration) {}

// CheckError implements checkback.Metrics.
func (NopMetrics) CheckError(string) {}

// Prepared implements Metrics.
func (NopMetrics) Prepared() {}

// Resolved implements Metrics.
func (NopMetrics) Resolved(State, string) {}

// PreparedBacklog implements Metrics.
func (NopMetrics) PreparedBacklog(int64, time.Duration) {}
