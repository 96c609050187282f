// Package backoff computes exponential retry delays with jitter and an
// optional cap.
package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff: attempt n (from 1) waits a random duration
// in [d/2, d] where d = Initial * Factor^(n-1), capped at Max (no cap when Max
// is 0). Half-jitter keeps retries of many callers apart while still growing
// for each one. A Factor below 1 counts as 2.
type Policy struct {
	Initial time.Duration
	Max     time.Duration
	Factor  float64
}

// Ceiling is the delay before jitter for attempt n (n >= 1).
func (p Policy) Ceiling(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	f := p.Factor
	if f < 1 {
		f = 2
	}
	// Without a cap the delay still stops growing at the longest Duration.
	limit := float64(math.MaxInt64)
	if p.Max > 0 {
		limit = float64(p.Max)
	}
	d := float64(p.Initial)
	for i := 1; i < n && d < limit; i++ {
		d *= f
	}
	switch {
	case d < limit:
		return time.Duration(d)
	case p.Max > 0:
		return p.Max
	default:
		return math.MaxInt64
	}
}

// Delay is the jittered delay for attempt n (n >= 1): in [Ceiling(n)/2, Ceiling(n)].
func (p Policy) Delay(n int) time.Duration {
	c := p.Ceiling(n)
	if c <= 1 {
		return c
	}
	half := c / 2
	return half + rand.N(c-half+1)
}

// Sleep waits d unless ctx ends first, and reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
