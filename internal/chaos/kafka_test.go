package chaos

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/kafkax"
)

// TestChaosClusterFaults: each produce fault refuses or delays writes while
// it lasts, and heal ends them all.
func TestChaosClusterFaults(t *testing.T) {
	t.Parallel()
	k, err := startCluster(2, 700*time.Millisecond, "gated")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.close)
	w, err := kafkax.NewWriter([]string{k.addr}, kafkax.WriterConfig{MaxAttempts: 1, WriteTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	write := func(topic string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return w.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte("k"), Value: []byte("v")})
	}
	for _, topic := range []string{"plain", "gated"} {
		if err := write(topic); err != nil {
			t.Fatalf("healthy write to %s: %v", topic, err)
		}
	}
	k.gate.Store(true)
	if err := write("gated"); err == nil {
		t.Fatal("write to the gated topic: want a refusal")
	}
	if err := write("plain"); err != nil {
		t.Fatalf("write to another topic while gated: %v", err)
	}
	for name, fault := range map[string]*atomic.Int64{"refuse all": &k.refuseAll, "drop connections": &k.dropConns} {
		strike(fault, time.Hour)
		if err := write("plain"); err == nil {
			t.Fatalf("%s: want a refusal", name)
		}
		k.heal()
	}
	strike(&k.slow, time.Hour)
	if err := write("plain"); err != nil || k.held.Load() != 1 {
		t.Fatalf("slow write: %v, %d requests held back; want it written after being held back", err, k.held.Load())
	}
	k.heal()
	if err := write("gated"); err != nil || k.held.Load() != 1 {
		t.Fatalf("healed write: %v, %d requests held back in all; want it written at once", err, k.held.Load())
	}
}
