package consumer

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/testenv"
)

// TestConsumerRateLimit: the limit holds handling back, and SetRateLimit
// lifts it while Run runs.
func TestConsumerRateLimit(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 2)
	var msgs []kafka.Message
	for i := 0; i < 200; i++ {
		msgs = append(msgs, record("t", strconv.Itoa(i), "", "0"))
	}
	produce(t, k.Addrs, msgs...)
	m := &recorder{}
	c, err := New(k.Addrs, "g", []string{"t"}, fastGroup(), WithRateLimit(10, 1), WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	handled := startCounting(t, c)
	t0, n0 := time.Now(), handled.Load()
	testenv.Eventually(t, 10*time.Second, func() error {
		if time.Since(t0) < time.Second {
			return fmt.Errorf("measuring")
		}
		return nil
	})
	rate := float64(handled.Load()-n0) / time.Since(t0).Seconds()
	if rate > 15 {
		t.Fatalf("%.1f messages/s under a limit of 10/s", rate)
	}
	c.SetRateLimit(0, 0)
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := handled.Load(); got != int64(len(msgs)) {
			return fmt.Errorf("%d of %d handled after lifting the limit", got, len(msgs))
		}
		return nil
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.lag) != 2 {
		t.Fatalf("lag reported for partitions %v, want both", m.lag)
	}
	for p, l := range m.lag {
		if l != 0 {
			t.Fatalf("partition %d lag %d after consuming everything, want 0", p, l)
		}
	}
}

// TestConsumerRateLimitChangeReachesWaitingFetches: a fetch loop already
// waiting under a slow limit takes a new one at once, not when the old
// reservation (100s here) would have ended.
func TestConsumerRateLimitChangeReachesWaitingFetches(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	produce(t, k.Addrs, record("slow", "k", "", "0"), record("slow", "k", "", "1"))
	c, err := New(k.Addrs, "g", []string{"slow"}, fastGroup(), WithRateLimit(0.01, 1))
	if err != nil {
		t.Fatal(err)
	}
	handled := startCounting(t, c)
	time.Sleep(300 * time.Millisecond) // the second message waits for its token
	if n := handled.Load(); n != 1 {
		t.Fatalf("%d handled under 0.01/s with a burst of 1, want 1", n)
	}
	c.SetRateLimit(0, 0)
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := handled.Load(); n != 2 {
			return fmt.Errorf("%d of 2 handled after lifting the limit", n)
		}
		return nil
	})
}

// startCounting runs c with a handler that counts the messages it handles,
// and returns the count once the first is handled.
func startCounting(t *testing.T, c *Consumer) *atomic.Int64 {
	t.Helper()
	var handled atomic.Int64
	start(t, c, HandlerFunc(func(context.Context, Message) error {
		handled.Add(1)
		return nil
	}))
	testenv.Eventually(t, 20*time.Second, func() error {
		if handled.Load() == 0 {
			return fmt.Errorf("nothing handled yet")
		}
		return nil
	})
	return &handled
}
