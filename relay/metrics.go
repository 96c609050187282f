package relay

import "time"

// Metrics receives the engine's measurements. Implementations must be safe
// for concurrent use and must not block; internal/metrics adapts it to
// Prometheus. The zero choice is NopMetrics.
type Metrics interface {
	// Published counts n records of source acknowledged by Kafka on topic.
	Published(source, topic string, n int)
	// PublishLatency observes one batch's produce round trip.
	PublishLatency(source string, d time.Duration)
	// DeadLettered counts n messages of source moved to the dead-letter table.
	DeadLettered(source, topic string, n int)
	// Error counts a failure by kind: "poll", "publish", "mark", "lease",
	// "dead_letter", "purge", "backlog".
	Error(source, kind string)
	// LeasesHeld reports how many shards of source this engine owns.
	LeasesHeld(source string, n int)
	// Backlog reports pending rows of source and the age of the oldest.
	Backlog(source string, pending int64, oldestAge time.Duration)
	// Purged counts delivered rows deleted by the retention job.
	Purged(source string, n int64)
}

// NopMetrics discards every measurement.
type NopMetrics struct{}

// Published implements Metrics.
func (NopMetrics) Published(string, string, int) {}

// PublishLatency implements Metrics.
func (NopMetrics) PublishLatency(string, time.Duration) {}

// DeadLettered implements Metrics.
func (NopMetrics) DeadLettered(string, string, int) {}

// Error implements Metrics.
func (NopMetrics) Error(string, string) {}

// LeasesHeld implements Metrics.
func (NopMetrics) LeasesHeld(string, int) {}

// Backlog implements Metrics.
func (NopMetrics) Backlog(string, int64, time.Duration) {}

// Purged implements Metrics.
func (NopMetrics) Purged(string, int64) {}
