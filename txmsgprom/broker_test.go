package txmsgprom

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/txmsg/txmsg/broker"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

func TestBrokerMetricsAdapter(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := NewBroker(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Prepared()
	m.Prepared()
	m.Resolved(halfmsg.StateCommitted, broker.ByCheckback)
	m.Resolved(halfmsg.StateRolledBack, broker.ByProducer)
	m.Resolved(halfmsg.StateDiscarded, broker.ByCheckback)
	m.PreparedBacklog(7, 3*time.Second)
	m.Checked("unknown", 20*time.Millisecond)
	m.CheckError("claim")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			switch {
			case mt.GetCounter() != nil:
				got[f.GetName()] += mt.GetCounter().GetValue()
			case mt.GetGauge() != nil:
				got[f.GetName()] = mt.GetGauge().GetValue()
			case mt.GetHistogram() != nil:
				got[f.GetName()] = float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"txmsg_half_prepared_total":              2,
		"txmsg_half_committed_total":             1,
		"txmsg_half_rolled_back_total":           1,
		"txmsg_half_discarded_total":             1,
		"txmsg_half_prepared_backlog":            7,
		"txmsg_half_prepared_oldest_age_seconds": 3,
		"txmsg_checkback_checks_total":           1,
		"txmsg_checkback_latency_seconds":        1,
		"txmsg_checkback_errors_total":           1,
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v", name, got[name], v)
		}
	}
	if _, err := NewBroker(reg); err == nil {
		t.Fatal("registering twice: want an error")
	}
}
