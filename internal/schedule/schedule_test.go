package schedule

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

func TestScheduleEveryRunsAtOnceAndStopsWithCtx(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var runs atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, time.Millisecond, func(context.Context) {
			if runs.Add(1) == 3 {
				cancel()
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("Every did not return after ctx ended")
	}
	if n := runs.Load(); n != 3 {
		t.Fatalf("%d runs, want 3", n)
	}
}

// A run that panics is logged and the schedule goes on (cron's @every
// rounds up to a second, so this takes about two).
func TestScheduleCronRecoversAndStops(t *testing.T) {
	t.Parallel()
	if _, err := Cron("every now and then", slog.New(slog.DiscardHandler), func() {}); err == nil {
		t.Fatal("a bad spec was accepted")
	}
	var runs atomic.Int32
	stop, err := Cron("@every 10ms", slog.New(slog.DiscardHandler), func() {
		if runs.Add(1) == 1 {
			panic("first run")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runs.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if runs.Load() < 2 {
		t.Fatal("the schedule did not survive a panicking run")
	}
}

func TestScheduleAge(t *testing.T) {
	t.Parallel()
	if Age(time.Time{}) != 0 || Age(time.Now().Add(time.Hour)) != 0 || Age(time.Now().Add(-time.Minute)) < time.Minute {
		t.Fatal("Age is wrong")
	}
}
