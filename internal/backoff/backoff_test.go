package backoff

import (
	"math"
	"testing"
	"time"
)

func TestBackoffCeilingGrowsAndCaps(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second, Factor: 2}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Ceiling(i + 1); got != w*time.Millisecond {
			t.Errorf("Ceiling(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := p.Ceiling(1000); got != time.Second {
		t.Errorf("Ceiling(1000) = %v, want the cap", got)
	}
}

func TestBackoffDelayJitterWithinBounds(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second, Factor: 2}
	seen := map[time.Duration]bool{}
	for n := 1; n <= 6; n++ {
		c := p.Ceiling(n)
		for range 200 {
			d := p.Delay(n)
			if d < c/2 || d > c {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", n, d, c/2, c)
			}
			seen[d] = true
		}
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct delays in 1200 draws: no jitter", len(seen))
	}
}

// TestBackoffWithoutCapKeepsGrowing: Max 0 means no cap, not a zero delay,
// and the delay stops growing at the longest Duration instead of
// overflowing.
func TestBackoffWithoutCapKeepsGrowing(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Factor: 2}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 11: 102400 * time.Millisecond} {
		if got := p.Ceiling(n); got != want {
			t.Errorf("Ceiling(%d) = %v, want %v", n, got, want)
		}
	}
	if got := p.Ceiling(10000); got != math.MaxInt64 {
		t.Errorf("Ceiling(10000) = %v, want the longest Duration", got)
	}
	if d := p.Delay(10000); d < math.MaxInt64/2 {
		t.Errorf("Delay(10000) = %v, want at least half the longest Duration", d)
	}
}
