package metrics

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg/txmsgprom"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestMetricsServerEndpoints(t *testing.T) {
	t.Parallel()
	reg := NewRegistry()
	m, err := txmsgprom.NewRelay(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Published("outbox", "orders", 3)
	m.PublishLatency("outbox", 3*time.Millisecond)
	m.Error("outbox", "publish")
	m.LeasesHeld("outbox", 16)
	m.Backlog("outbox", 42, 1500*time.Millisecond)
	m.DeadLettered("outbox", "orders", 1)
	m.Purged("outbox", 7)

	var ready atomic.Bool
	s, err := NewServer("127.0.0.1:0", reg, ready.Load, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	base := "http://" + s.Addr()

	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready: %d, want 503", code)
	}
	ready.Store(true)
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready: %d, want 200", code)
	}
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`txmsg_relay_published_total{source="outbox",topic="orders"} 3`,
		`txmsg_relay_publish_seconds_count{source="outbox"} 1`,
		`txmsg_relay_errors_total{kind="publish",source="outbox"} 1`,
		`txmsg_relay_leases_held{source="outbox"} 16`,
		`txmsg_relay_pending_rows{source="outbox"} 42`,
		`txmsg_relay_oldest_pending_seconds{source="outbox"} 1.5`,
		`txmsg_relay_dead_lettered_total{source="outbox",topic="orders"} 1`,
		`txmsg_relay_purged_total{source="outbox"} 7`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	if _, err := NewServer(s.Addr(), reg, nil, nil); err == nil || !strings.Contains(err.Error(), s.Addr()) {
		t.Errorf("second server on %s: %v, want an error naming the address", s.Addr(), err)
	}
	if _, err := txmsgprom.NewRelay(reg); err == nil {
		t.Error("registering the relay collectors twice succeeded")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
