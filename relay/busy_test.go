package relay

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

// busySource is the outbox through the Source methods and Busy, whose busy
// shards are those listed in busy.
type busySource struct {
	*pollSource
	busy []int
}

func (s *busySource) BusyShards(context.Context, Querier, int) ([]int, error) { return s.busy, nil }

func withBusyFallback(d time.Duration) Option { return func(e *Engine) { e.busyFallback = d } }

// The workers of a Busy source poll when watchBusy finds their shard busy
// (every PollMax) and, idle, on their own only every busyFallback; the
// rows of a busy shard are delivered.
func TestEngineWakesTheBusyShardsOfABusySource(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	cfg := testConfig(k.Addrs) // PollMax 50ms
	key := "busy"
	shard := txmsg.Shard([]byte(key), "", DefaultConfig().Shards)
	src := &busySource{pollSource: &pollSource{out: NewOutboxSource(false), consistent: true}, busy: []int{shard}}
	startEngine(t, d.DB, cfg, WithSources(src), withBusyFallback(time.Hour))
	// Idle workers poll 2, 4, 8… ms apart, up to the fallback: after its
	// 11th poll a worker waits 2 s, unless woken. Counted, not timed: a
	// loaded machine may start the workers late.
	testenv.Eventually(t, 30*time.Second, func() error {
		for i := range src.shards {
			if n := src.shards[i].Load(); n < 11 {
				return fmt.Errorf("shard %d polled %d times", i, n)
			}
		}
		return nil
	})
	var before [16]int64
	for i := range src.shards {
		before[i] = src.shards[i].Load()
	}
	time.Sleep(time.Second)
	for i := range src.shards {
		n := src.shards[i].Load() - before[i]
		switch {
		case i == shard && n < 5:
			t.Errorf("busy shard %d polled %d times in a second, want about 20 (woken every PollMax)", i, n)
		case i != shard && n > 2:
			t.Errorf("idle shard %d polled %d times in a second, want at most 2", i, n)
		}
	}
	if err := publishTx(context.Background(), d.DB, true, msg("busy-topic", key, 1)); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, k.Addrs, "busy-topic", 1, 20*time.Second)
}
