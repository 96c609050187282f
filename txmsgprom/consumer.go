package txmsgprom

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/txmsg/txmsg/consumer"
)

// Consumer implements every consumer hook with Prometheus collectors. It is
// safe for concurrent use and never blocks.
type Consumer struct {
	consumed     *prometheus.CounterVec
	duplicates   *prometheus.CounterVec
	failed       *prometheus.CounterVec
	retried      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	lag          *prometheus.GaugeVec
}

var _ interface {
	consumer.ConsumedHook
	consumer.DuplicateHook
	consumer.FailedHook
	consumer.RetriedHook
	consumer.DeadLetteredHook
	consumer.HandlerLatencyHook
	consumer.LagHook
} = (*Consumer)(nil)

// NewConsumer creates the consumer SDK's collectors and registers them on reg:
//
//	txmsg_consumer_consumed_total{group,topic}       messages handled and acknowledged
//	txmsg_consumer_duplicates_total{group,topic}     messages skipped by the inbox
//	txmsg_consumer_failed_total{group,topic}         failed handler attempts
//	txmsg_consumer_retried_total{group,topic}        attempts scheduled after a failure
//	txmsg_consumer_dead_lettered_total{group,topic}  messages written to the dead-letter topic
//	txmsg_consumer_handler_seconds{group,topic}      one handler attempt, with its transaction
//	txmsg_consumer_lag{group,topic,partition}        records behind the high watermark
//
// It fails when reg already holds collectors of these names.
func NewConsumer(reg prometheus.Registerer) (*Consumer, error) {
	gt := []string{"group", "topic"}
	m := &Consumer{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_consumer_consumed_total",
			Help: "Messages handled successfully and acknowledged.",
		}, gt),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_consumer_duplicates_total",
			Help: "Messages skipped because their inbox row existed (redeliveries).",
		}, gt),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_consumer_failed_total",
			Help: "Handler attempts that returned an error.",
		}, gt),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_consumer_retried_total",
			Help: "Handler attempts scheduled again after a failure.",
		}, gt),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_consumer_dead_lettered_total",
			Help: "Messages written to the dead-letter topic after their last attempt.",
		}, gt),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "txmsg_consumer_handler_seconds",
			Help:    "Duration of one handler attempt, with its inbox transaction, in seconds.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, gt),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "txmsg_consumer_lag",
			Help: "Records of a partition behind its high watermark, as of the last fetch.",
		}, []string{"group", "topic", "partition"}),
	}
	for _, c := range []prometheus.Collector{m.consumed, m.duplicates, m.failed, m.retried, m.deadLettered, m.latency, m.lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("txmsgprom: register consumer collectors: %w", err)
		}
	}
	return m, nil
}

// Consumed implements consumer.ConsumedHook.
func (m *Consumer) Consumed(group, topic string, _ int) {
	m.consumed.WithLabelValues(group, topic).Inc()
}

// Duplicate implements consumer.DuplicateHook.
func (m *Consumer) Duplicate(group, topic string) {
	m.duplicates.WithLabelValues(group, topic).Inc()
}

// Failed implements consumer.FailedHook.
func (m *Consumer) Failed(group, topic string) { m.failed.WithLabelValues(group, topic).Inc() }

// Retried implements consumer.RetriedHook.
func (m *Consumer) Retried(group, topic string) { m.retried.WithLabelValues(group, topic).Inc() }

// DeadLettered implements consumer.DeadLetteredHook.
func (m *Consumer) DeadLettered(group, topic string) {
	m.deadLettered.WithLabelValues(group, topic).Inc()
}

// HandlerLatency implements consumer.HandlerLatencyHook.
func (m *Consumer) HandlerLatency(group, topic string, d time.Duration) {
	m.latency.WithLabelValues(group, topic).Observe(d.Seconds())
}

// Lag implements consumer.LagHook.
func (m *Consumer) Lag(group, topic string, partition int, lag int64) {
	m.lag.WithLabelValues(group, topic, strconv.Itoa(partition)).Set(float64(lag))
}
