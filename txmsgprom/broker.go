package txmsgprom

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/txmsg/txmsg/broker"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

// Broker adapts broker.Metrics (and the check-back scanner's hooks) to
// Prometheus. It is safe for concurrent use.
type Broker struct {
	prepared   prometheus.Counter
	committed  *prometheus.CounterVec
	rolledBack *prometheus.CounterVec
	discarded  prometheus.Counter
	backlog    prometheus.Gauge
	oldestAge  prometheus.Gauge
	checks     *prometheus.CounterVec
	latency    prometheus.Histogram
	errors     *prometheus.CounterVec
}

var _ interface {
	broker.CheckedHook
	broker.CheckErrorHook
	broker.PreparedHook
	broker.ResolvedHook
	broker.PreparedBacklogHook
} = (*Broker)(nil)

// NewBroker registers the broker's metrics on reg and returns the adapter:
//
//	txmsg_half_prepared_total                 prepared messages
//	txmsg_half_committed_total{by}            committed, by producer, checkback or operator
//	txmsg_half_rolled_back_total{by}          rolled back, likewise
//	txmsg_half_discarded_total                discarded after max checks
//	txmsg_half_prepared_backlog               prepared messages now
//	txmsg_half_prepared_oldest_age_seconds    age of the oldest prepared message
//	txmsg_checkback_checks_total{outcome}     check-backs: commit, rollback, unknown, error
//	txmsg_checkback_latency_seconds           check-back round trips
//	txmsg_checkback_errors_total{kind}        scanner failures: claim, record
func NewBroker(reg prometheus.Registerer) (*Broker, error) {
	if reg == nil {
		return nil, errors.New("metrics: broker: nil Registerer")
	}
	b := &Broker{
		prepared: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "txmsg_half_prepared_total", Help: "Half messages prepared."}),
		committed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_half_committed_total", Help: "Half messages committed, by who decided (producer, checkback, operator)."},
			[]string{"by"}),
		rolledBack: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_half_rolled_back_total", Help: "Half messages rolled back, by who decided (producer, checkback, operator)."},
			[]string{"by"}),
		discarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "txmsg_half_discarded_total", Help: "Half messages discarded after their last check-back."}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "txmsg_half_prepared_backlog", Help: "Half messages prepared and not yet resolved."}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "txmsg_half_prepared_oldest_age_seconds", Help: "Age of the oldest prepared half message."}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_checkback_checks_total", Help: "Check-backs by outcome (commit, rollback, unknown, error)."},
			[]string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "txmsg_checkback_latency_seconds", Help: "Check-back call round trips.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "txmsg_checkback_errors_total", Help: "Check-back scanner failures by kind (claim, record)."},
			[]string{"kind"}),
	}
	for _, c := range []prometheus.Collector{b.prepared, b.committed, b.rolledBack, b.discarded, b.backlog,
		b.oldestAge, b.checks, b.latency, b.errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("txmsgprom: broker: %w", err)
		}
	}
	return b, nil
}

// Prepared implements broker.PreparedHook.
func (b *Broker) Prepared() { b.prepared.Inc() }

// Resolved implements broker.ResolvedHook.
func (b *Broker) Resolved(to halfmsg.State, by string) {
	switch to {
	case halfmsg.StateCommitted:
		b.committed.WithLabelValues(by).Inc()
	case halfmsg.StateRolledBack:
		b.rolledBack.WithLabelValues(by).Inc()
	case halfmsg.StateDiscarded:
		b.discarded.Inc()
	}
}

// PreparedBacklog implements broker.PreparedBacklogHook.
func (b *Broker) PreparedBacklog(n int64, oldestAge time.Duration) {
	b.backlog.Set(float64(n))
	b.oldestAge.Set(oldestAge.Seconds())
}

// Checked implements broker.CheckedHook.
func (b *Broker) Checked(outcome string, latency time.Duration) {
	b.checks.WithLabelValues(outcome).Inc()
	b.latency.Observe(latency.Seconds())
}

// CheckError implements broker.CheckErrorHook.
func (b *Broker) CheckError(kind string) { b.errors.WithLabelValues(kind).Inc() }
