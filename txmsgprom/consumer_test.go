package txmsgprom

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConsumerMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := NewConsumer(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Consumed("g", "t", 0)
	m.Consumed("g", "t", 1)
	m.Duplicate("g", "t")
	m.Failed("g", "t")
	m.Retried("g", "t")
	m.DeadLettered("g", "t")
	m.HandlerLatency("g", "t", 3*time.Millisecond)
	m.Lag("g", "t", 2, 42)
	want := `
# HELP txmsg_consumer_consumed_total Messages handled successfully and acknowledged.
# TYPE txmsg_consumer_consumed_total counter
txmsg_consumer_consumed_total{group="g",topic="t"} 2
# HELP txmsg_consumer_lag Records of a partition behind its high watermark, as of the last fetch.
# TYPE txmsg_consumer_lag gauge
txmsg_consumer_lag{group="g",partition="2",topic="t"} 42
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "txmsg_consumer_consumed_total", "txmsg_consumer_lag"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.latency); n != 1 {
		t.Fatalf("%d latency series, want 1", n)
	}
	if _, err := NewConsumer(reg); err == nil {
		t.Fatal("second NewConsumer on the same registry succeeded")
	}
}
