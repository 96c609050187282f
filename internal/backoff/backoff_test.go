package backoff

import (
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
