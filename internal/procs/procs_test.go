package procs

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// fit raises at a busy P at once, and lowers only after calmTicks calm
// ticks in a row at the default.
func TestFitRaisesAtOnceAndLowersAfterCalmTicks(t *testing.T) {
	g := governor{busy: busy, calm: calm, calmTicks: 3}
	steps := []struct {
		atOne bool
		cores float64
		want  move
	}{
		{true, 0.5, stay},
		{true, 0.9, up},
		{false, 0.3, stay},
		{false, 0.3, stay},
		{false, 0.6, stay}, // a busy tick starts the count again
		{false, 0.3, stay},
		{false, 0.2, stay},
		{false, 0.1, down},
		{true, 0.79, stay},
	}
	for i, s := range steps {
		if got := g.fit(s.atOne, s.cores); got != s.want {
			t.Fatalf("step %d: fit(%v, %.2f) = %d, want %d", i, s.atOne, s.cores, got, s.want)
		}
	}
}

// Govern starts at one P, gives the default back while the process keeps
// a P busy, one P again once it is calm, and the default when it ends.
func TestGovernFollowsTheLoad(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	if def < 2 {
		t.Skipf("the runtime's default is %d P: nothing to fit", def)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	g := governor{tick: 50 * time.Millisecond, busy: 0.3, calm: 0.15, calmTicks: 3}
	go func() {
		defer close(ended)
		g.run(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() {
		cancel()
		<-ended
	})
	waitProcs(t, "at start", func(n int) bool { return n == 1 })

	var spin atomic.Bool
	spin.Store(true)
	burnt := make(chan struct{})
	go func() {
		defer close(burnt)
		for spin.Load() {
		}
	}()
	t.Cleanup(func() { spin.Store(false) })
	waitProcs(t, "while a goroutine spins", func(n int) bool { return n == def })
	spin.Store(false)
	<-burnt
	waitProcs(t, "once calm again", func(n int) bool { return n == 1 })

	cancel()
	<-ended
	if n := runtime.GOMAXPROCS(0); n != def {
		t.Fatalf("GOMAXPROCS after Govern ended = %d, want the default %d", n, def)
	}
}

// The operator's GOMAXPROCS stands: Govern returns at once.
func TestGovernLeavesTheEnvironmentsSetting(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	before := runtime.GOMAXPROCS(0)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		Govern(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("Govern ran on although GOMAXPROCS is set")
	}
	if n := runtime.GOMAXPROCS(0); n != before {
		t.Fatalf("GOMAXPROCS = %d, want %d as before", n, before)
	}
}

// waitProcs waits up to 10 s for GOMAXPROCS to satisfy ok.
func waitProcs(t *testing.T, when string, ok func(int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.GOMAXPROCS(0)
		if ok(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: GOMAXPROCS stayed %d", when, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
