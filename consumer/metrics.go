package consumer

import "time"

// Metrics receives the consumer's measurements. Implementations must be safe
// for concurrent use and must not block; internal/metrics adapts it to
// Prometheus. The default is NopMetrics.
type Metrics interface {
	// Consumed counts a message handled successfully (acknowledged).
	Consumed(group, topic string, partition int)
	// Duplicate counts a message skipped because its inbox row existed.
	Duplicate(group, topic string)
	// Failed counts one failed handler attempt.
	Failed(group, topic string)
	// Retried counts a message scheduled for another attempt.
	Retried(group, topic string)
	// DeadLettered counts a message written to the dead-letter topic.
	DeadLettered(group, topic string)
	// HandlerLatency observes one handler attempt (with its transaction).
	HandlerLatency(group, topic string, d time.Duration)
	// Lag reports the records of a partition behind the last fetched one,
	// from the high watermark of the fetch response.
	Lag(group, topic string, partition int, lag int64)
}

// NopMetrics discards every measurement.
type NopMetrics struct{}

// Consumed implements Metrics.
func (NopMetrics) Consumed(string, string, int) {}

// Duplicate implements Metrics.
func (NopMetrics) Duplicate(string, string) {}

// Failed implements Metrics.
func (NopMetrics) Failed(string, string) {}

// Retried implements Metrics.
func (NopMetrics) Retried(string, string) {}

// DeadLettered implements Metrics.
func (NopMetrics) DeadLettered(string, string) {}

// HandlerLatency implements Metrics.
func (NopMetrics) HandlerLatency(string, string, time.Duration) {}

// Lag implements Metrics.
func (NopMetrics) Lag(string, string, int, int64) {}
