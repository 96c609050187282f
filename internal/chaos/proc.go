package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one child process (a relay, a broker or a consumer) that may be
// killed, paused and started again. It runs in its own process group and
// dies with the soak: its context kills the group, and so does the kernel
// if the soak itself dies (Pdeathsig). Its output is appended to logPath.
type proc struct {
	name    string
	kind    string
	path    string
	args    []string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current run ended
	planned bool          // the current run is being killed on purpose
	paused  bool
}

// start runs the process; it must not be running. wg tracks the goroutine
// that waits for it, and unplanned reports exits nobody asked for.
func (p *proc) start(ctx context.Context, wg *sync.WaitGroup, unplanned func(*proc, error)) error {
	out, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("chaos: %s: open log: %w", p.name, err)
	}
	defer out.Close() // the child has its own descriptor
	fmt.Fprintf(out, "=== chaos: start %s at %s\n", p.name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.CommandContext(ctx, p.path, p.args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("chaos: start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited, p.planned, p.paused = cmd, exited, false, false
	p.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := cmd.Wait()
		p.mu.Lock()
		planned := p.planned
		close(exited)
		p.mu.Unlock()
		if !planned && ctx.Err() == nil {
			unplanned(p, err)
		}
	}()
	return nil
}

// running says whether the process was started and has not exited.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL to the process group and waits up to 10s for the exit.
func (p *proc) kill() error { return p.end(syscall.SIGKILL, "kill -9") }

// dumpStacks makes a running process print every goroutine's stack into its
// log and exit (Go's answer to SIGQUIT), so that a run that failed shows
// where each process was waiting. A paused process is resumed first.
func (p *proc) dumpStacks() error {
	if !p.running() {
		return nil
	}
	if err := p.pause(false); err != nil {
		return err
	}
	return p.end(syscall.SIGQUIT, "kill -QUIT")
}

// end sends sig to the process group as a planned exit and waits up to 10s
// for the process to exit; what names the signal in errors.
func (p *proc) end(sig syscall.Signal, what string) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if cmd == nil {
		p.mu.Unlock()
		return nil
	}
	p.planned, p.paused = true, false
	p.mu.Unlock()
	if err := killGroup(cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("chaos: %s %s: %w", what, p.name, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("chaos: %s did not exit within 10s of %s", p.name, what)
	}
}

// pause sends SIGSTOP (pause true) or SIGCONT to a running process.
func (p *proc) pause(stop bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.paused == stop {
		return nil
	}
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	if err := killGroup(p.cmd.Process.Pid, sig); err != nil {
		return fmt.Errorf("chaos: %v %s: %w", sig, p.name, err)
	}
	p.paused = stop
	return nil
}

// killGroup signals the process group led by pid; a group already gone is
// not an error.
func killGroup(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}
