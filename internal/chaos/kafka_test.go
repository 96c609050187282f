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
	write := func(topic string) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		err := w.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte("k"), Value: []byte("v")})
		return time.Since(start), err
	}
	for _, topic := range []string{"plain", "gated"} {
		if _, err := write(topic); err != nil {
			t.Fatalf("healthy write to %s: %v", topic, err)
		}
	}
	k.gate.Store(true)
	if _, err := write("gated"); err == nil {
		t.Fatal("write to the gated topic: want a refusal")
	}
	if _, err := write("plain"); err != nil {
		t.Fatalf("write to another topic while gated: %v", err)
	}
	for name, fault := range map[string]*atomic.Int64{"refuse all": &k.refuseAll, "drop connections": &k.dropConns} {
		strike(fault, time.Hour)
		if _, err := write("plain"); err == nil {
			t.Fatalf("%s: want a refusal", name)
		}
		k.heal()
	}
	strike(&k.slow, time.Hour)
	if took, err := write("plain"); err != nil || took < 700*time.Millisecond {
		t.Fatalf("slow write took %v (%v), want at least 700ms", took, err)
	}
	k.heal()
	if took, err := write("gated"); err != nil || took > 500*time.Millisecond {
		t.Fatalf("healed write took %v (%v)", took, err)
	}
}
