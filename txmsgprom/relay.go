package txmsgprom

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/txmsg/txmsg/relay"
)

// Relay implements every relay hook with Prometheus collectors. It is safe for
// concurrent use and never blocks.
type Relay struct {
	published    *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	deadLettered *prometheus.CounterVec
	errors       *prometheus.CounterVec
	leases       *prometheus.GaugeVec
	pending      *prometheus.GaugeVec
	oldest       *prometheus.GaugeVec
	purged       *prometheus.CounterVec
}

var _ interface {
	relay.PublishedHook
	relay.PublishLatencyHook
	relay.DeadLetteredHook
	relay.ErrorHook
	relay.LeasesHeldHook
	relay.BacklogHook
	relay.PurgedHook
} = (*Relay)(nil)

// NewRelay creates the relay's collectors and registers them on reg:
//
//	txmsg_relay_published_total{source,topic}      records Kafka acknowledged
//	txmsg_relay_publish_seconds{source}            produce round trip of a round's partitions
//	txmsg_relay_dead_lettered_total{source,topic}  messages moved to the dead-letter table
//	txmsg_relay_errors_total{source,kind}          failures by kind (poll, publish, mark, ...)
//	txmsg_relay_leases_held{source}                shards this process owns
//	txmsg_relay_pending_rows{source}               rows waiting for delivery
//	txmsg_relay_oldest_pending_seconds{source}     age of the oldest pending row
//	txmsg_relay_purged_total{source}               delivered rows purged after the retention
//
// It fails when reg already holds collectors of these names.
func NewRelay(reg prometheus.Registerer) (*Relay, error) {
	m := &Relay{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_relay_published_total",
			Help: "Records published to Kafka and acknowledged (acks=all).",
		}, []string{"source", "topic"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "txmsg_relay_publish_seconds",
			Help:    "Produce round trip of a relay round's partitions, sent together, in seconds.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"source"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_relay_dead_lettered_total",
			Help: "Messages moved to txmsg_dead_letters after Kafka refused them for good.",
		}, []string{"source", "topic"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_relay_errors_total",
			Help: "Relay failures by kind: poll, publish, mark, lease, dead_letter, purge, backlog.",
		}, []string{"source", "kind"}),
		leases: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "txmsg_relay_leases_held",
			Help: "Shard leases this relay holds.",
		}, []string{"source"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "txmsg_relay_pending_rows",
			Help: "Rows waiting for delivery.",
		}, []string{"source"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "txmsg_relay_oldest_pending_seconds",
			Help: "Age of the oldest row waiting for delivery, in seconds (0 when none).",
		}, []string{"source"}),
		purged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_relay_purged_total",
			Help: "Delivered rows deleted by the retention purge.",
		}, []string{"source"}),
	}
	for _, c := range []prometheus.Collector{m.published, m.latency, m.deadLettered, m.errors, m.leases, m.pending, m.oldest, m.purged} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("txmsgprom: register relay collectors: %w", err)
		}
	}
	return m, nil
}

// Published implements relay.PublishedHook.
func (m *Relay) Published(source, topic string, n int) {
	m.published.WithLabelValues(source, topic).Add(float64(n))
}

// PublishLatency implements relay.PublishLatencyHook.
func (m *Relay) PublishLatency(source string, d time.Duration) {
	m.latency.WithLabelValues(source).Observe(d.Seconds())
}

// DeadLettered implements relay.DeadLetteredHook.
func (m *Relay) DeadLettered(source, topic string, n int) {
	m.deadLettered.WithLabelValues(source, topic).Add(float64(n))
}

// Error implements relay.ErrorHook.
func (m *Relay) Error(source, kind string) {
	m.errors.WithLabelValues(source, kind).Inc()
}

// LeasesHeld implements relay.LeasesHeldHook.
func (m *Relay) LeasesHeld(source string, n int) {
	m.leases.WithLabelValues(source).Set(float64(n))
}

// Backlog implements relay.BacklogHook.
func (m *Relay) Backlog(source string, pending int64, oldestAge time.Duration) {
	m.pending.WithLabelValues(source).Set(float64(pending))
	m.oldest.WithLabelValues(source).Set(oldestAge.Seconds())
}

// Purged implements relay.PurgedHook.
func (m *Relay) Purged(source string, n int64) {
	m.purged.WithLabelValues(source).Add(float64(n))
}
