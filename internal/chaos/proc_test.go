package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// childEnv makes this test binary, started again by TestProcDumpStacks, a
// child that waits in a recognisable function until it is signalled.
const childEnv = "TXMSG_CHAOS_TEST_CHILD"

// TestProcDumpStacks: a failed run's processes print where every goroutine
// waits into their logs, and the exit counts as planned.
func TestProcDumpStacks(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		fmt.Println("child waiting")
		waitForQuit()
		return
	}
	t.Setenv(childEnv, "1")
	log := filepath.Join(t.TempDir(), "child.log")
	p := &proc{name: "child", path: os.Args[0], args: []string{"-test.run=^TestProcDumpStacks$"}, logPath: log}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	unplanned := make(chan error, 1)
	if err := p.start(ctx, &wg, func(_ *proc, err error) { unplanned <- err }); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "child waiting") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child did not start within 30s; its log:\n%s", b)
		}
	}
	if err := p.pause(true); err != nil {
		t.Fatal(err)
	}
	if err := p.dumpStacks(); err != nil {
		t.Fatal(err)
	}
	if p.running() {
		t.Fatal("the child still runs after dumpStacks")
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "goroutine ") || !strings.Contains(string(b), "chaos.waitForQuit") {
		t.Fatalf("the log holds no stack of the waiting goroutine:\n%s", b)
	}
	select {
	case err := <-unplanned:
		t.Fatalf("dumpStacks counted as an unplanned exit: %v", err)
	default:
	}
}

// waitForQuit waits in a frame of its own, which the stack dump names.
//
//go:noinline
func waitForQuit() { time.Sleep(time.Minute) }
