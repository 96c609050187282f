package bench

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// TestCPUUseCountsThisProcess: the CPU a phase burns shows in its use, as
// the process's time and a busy machine.
func TestCPUUseCountsThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU use is read from /proc")
	}
	before := markCPU(nil)
	if !before.ok {
		t.Fatal("markCPU: /proc/stat or /proc/self/stat not read")
	}
	deadline := time.Now().Add(30 * time.Second)
	x := 0
	for markCPU(nil).proc-before.proc < 10 {
		if time.Now().After(deadline) {
			t.Fatal("10 ticks of CPU not counted in 30 s of spinning")
		}
		for i := range 1_000_000 {
			x ^= i
		}
	}
	u := cpuSince(before, nil)
	if !u.Known || u.Proc < 100*time.Millisecond || u.Busy <= 0 || u.Busy > 1 {
		t.Fatalf("use %+v (x %d): want known, at least 100ms of this process, a busy share in (0, 1]", u, x)
	}
	// The processes named add up: this one named twice counts twice.
	a := markCPU(nil)
	two := markCPU([]int{os.Getpid(), os.Getpid()})
	b := markCPU(nil)
	if !two.ok || two.proc < 2*a.proc || two.proc > 2*b.proc {
		t.Fatalf("this process twice: %d ticks, want between 2×%d and 2×%d", two.proc, a.proc, b.proc)
	}
}
