package consumer

import (
	"context"
	"testing"
	"time"
)

// TestConsumerTrackerLowWatermark: with messages finished out of order,
// the commit point is the last offset below which all are finished.
func TestConsumerTrackerLowWatermark(t *testing.T) {
	t.Parallel()
	tr := newTracker(100, 1<<20)
	var es []*entry
	for _, off := range []int64{10, 11, 13, 14, 20} { // gaps, as after compaction
		es = append(es, tr.add(off, 1))
	}
	want := func(wantLow int64, wantOK bool) {
		t.Helper()
		if low, ok := tr.pending(); ok != wantOK || wantOK && low != wantLow {
			t.Fatalf("pending = %d, %v; want %d, %v", low, ok, wantLow, wantOK)
		}
	}
	tr.finish(es[1])
	tr.finish(es[3])
	want(0, false)
	tr.finish(es[0])
	want(11, true)
	tr.committed(11)
	want(0, false)
	tr.finish(es[2])
	want(14, true)
	tr.finish(es[4])
	want(20, true)
}

// TestConsumerTrackerBoundsInFlight: the queue is full at its message or
// byte limit while its oldest message is unfinished, however many later
// ones finished, and waitRoom returns once the oldest finishes.
func TestConsumerTrackerBoundsInFlight(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		maxMsgs  int
		maxBytes int64
		size     int64
		fullAt   int
	}{
		{"messages", 3, 1 << 20, 10, 3},
		{"bytes", 100, 25, 10, 3},
		{"one big message", 100, 5, 10, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(tc.maxMsgs, tc.maxBytes)
			var es []*entry
			for i := 0; !tr.full(); i++ {
				if i > tc.fullAt {
					t.Fatalf("not full after %d messages", i)
				}
				es = append(es, tr.add(int64(i), tc.size))
				if i > 0 {
					tr.finish(es[i]) // later messages finish; the first is stuck
				}
			}
			if len(es) != tc.fullAt {
				t.Fatalf("full after %d messages, want %d", len(es), tc.fullAt)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			if err := tr.waitRoom(ctx); err == nil {
				t.Fatal("waitRoom returned while full")
			}
			done := make(chan error, 1)
			go func() { done <- tr.waitRoom(context.Background()) }()
			tr.finish(es[0])
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("waitRoom did not return after the stuck message finished")
			}
			if low, ok := tr.pending(); !ok || low != int64(tc.fullAt-1) {
				t.Fatalf("pending = %d, %v; want %d", low, ok, tc.fullAt-1)
			}
		})
	}
}

func TestConsumerTraceParent(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":      true,
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more": true,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more": false,
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01":      false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01":      false,
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":      false,
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01":      false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7":         false,
		"": false,
	}
	for s, want := range cases {
		if got := validTraceParent(s); got != want {
			t.Errorf("validTraceParent(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzConsumerTraceParent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("00-")
	f.Fuzz(func(t *testing.T, s string) {
		if validTraceParent(s) && len(s) < 55 {
			t.Fatalf("accepted short %q", s)
		}
	})
}
