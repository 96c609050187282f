package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin is the txmsg binary TestMain builds once for every test.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "txmsg-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "txmsg")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build txmsg:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is a finished run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

// txmsgRun runs the binary to completion (at most a minute).
func txmsgRun(t *testing.T, args ...string) result {
	t.Helper()
	return txmsgRunEnv(t, nil, args...)
}

// txmsgRunEnv runs the binary with env (KEY=VALUE) added to a clean
// environment.
func txmsgRunEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run txmsg %q: %v", args, err)
	}
	checkNoPanic(t, args, r.stderr)
	return r
}

// cleanEnv is the test's environment without TXMSG_ settings, so that a
// developer's shell cannot change what the binary sees.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TXMSG_") {
			env = append(env, kv)
		}
	}
	return env
}

func checkNoPanic(t *testing.T, args []string, stderr string) {
	t.Helper()
	if strings.Contains(stderr, "panic:") || strings.Contains(stderr, "goroutine ") {
		t.Errorf("txmsg %q panicked or dumped goroutines:\n%s", args, stderr)
	}
}

// proc is the binary running in the background.
type proc struct {
	t    *testing.T
	args []string
	cmd  *exec.Cmd
	done chan struct{}
	code int

	mu     sync.Mutex
	stdout []string
	stderr []string
	wake   chan struct{}
}

// txmsgStart starts the binary; it is killed when the test ends if still
// running.
func txmsgStart(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, args: args, cmd: exec.Command(bin, args...), done: make(chan struct{}), wake: make(chan struct{})}
	p.cmd.Env = cleanEnv()
	outPipe, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start txmsg %q: %v", args, err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); p.collect(outPipe, &p.stdout) }()
	go func() { defer readers.Done(); p.collect(errPipe, &p.stderr) }()
	go func() {
		readers.Wait()
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("txmsg %q stderr:\n%s", args, p.errText())
		}
	})
	return p
}

func (p *proc) collect(r io.Reader, into *[]string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.mu.Lock()
		*into = append(*into, sc.Text())
		close(p.wake)
		p.wake = make(chan struct{})
		p.mu.Unlock()
	}
}

func (p *proc) errText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.stderr, "\n")
}

// waitLine waits until a line of stdout (or stderr) matches re and returns
// its submatches.
func (p *proc) waitLine(stderr bool, re *regexp.Regexp, timeout time.Duration) []string {
	p.t.Helper()
	deadline := time.After(timeout)
	seen := 0
	for {
		p.mu.Lock()
		lines := p.stdout
		if stderr {
			lines = p.stderr
		}
		for ; seen < len(lines); seen++ {
			if m := re.FindStringSubmatch(lines[seen]); m != nil {
				p.mu.Unlock()
				return m
			}
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-wake:
		case <-p.done:
			p.t.Fatalf("txmsg %q exited (status %d) before printing a line matching %s", p.args, p.code, re)
		case <-deadline:
			p.t.Fatalf("txmsg %q printed no line matching %s within %v", p.args, re, timeout)
		}
	}
}

// stop sends SIGTERM and returns the exit status.
func (p *proc) stop(timeout time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("signal txmsg: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("txmsg %q did not exit within %v of SIGTERM", p.args, timeout)
	}
	checkNoPanic(p.t, p.args, p.errText())
	return p.code
}

// httpGet returns the status and body of url, or 0 when it cannot connect.
func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
