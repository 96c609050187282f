package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/relay"
)

// Env is what a benchmark runs against.
type Env struct {
	// DB is the pool of the producers, the naive loop and the checks; it
	// should allow at least as many connections as there are producers.
	DB *sql.DB
	// RelayDB is the pool of the in-process relay engine, apart from the
	// producers' so they do not queue for each other's connections.
	RelayDB *sql.DB
	// Brokers and Security reach Kafka.
	Brokers  []string
	Security kafkax.Security
	// Relay configures the in-process engine (Brokers, TLS and SASL are
	// taken from the fields above).
	Relay relay.Config
	// RelayCommand, when set, runs the relay as this command (a `txmsg
	// relay` binary and its arguments) instead of in-process; RelayEnv is
	// added to its environment. It is stopped with SIGINT.
	RelayCommand []string
	RelayEnv     []string
	// Progress receives a progress line about every second (nil: none).
	Progress io.Writer
	// Log receives the engine's and the relay process's warnings (nil:
	// discarded).
	Log *slog.Logger
}

func (e *Env) check() error {
	switch {
	case e.DB == nil:
		return errors.New("bench: no database")
	case e.RelayDB == nil && len(e.RelayCommand) == 0:
		return errors.New("bench: no relay database")
	}
	return kafkax.CheckBrokers(e.Brokers)
}

func (e *Env) logger() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return e.Log
}

// progressf writes one progress line.
func (e *Env) progressf(format string, args ...any) {
	if e.Progress != nil {
		fmt.Fprintf(e.Progress, format+"\n", args...)
	}
}

// runID names one run's topics and message ids.
func runID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// relayRun is a relay started for one phase.
type relayRun struct {
	stop func() error
	// pid is the relay process's, 0 in-process.
	pid int
	// published counts what the in-process engine delivered.
	published *atomic.Int64
}

// countHook counts published records.
type countHook struct{ n *atomic.Int64 }

// Published implements relay.PublishedHook.
func (h countHook) Published(_, _ string, n int) { h.n.Add(int64(n)) }

// startRelay starts the relay engine in-process, or the relay command, and
// returns how to stop it. ctx bounds its life.
func (e *Env) startRelay(ctx context.Context) (*relayRun, error) {
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	if len(e.RelayCommand) > 0 {
		cmd := exec.CommandContext(gctx, e.RelayCommand[0], e.RelayCommand[1:]...)
		cmd.Env = append(os.Environ(), e.RelayEnv...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 30 * time.Second
		if err := cmd.Start(); err != nil {
			cancel()
			return nil, fmt.Errorf("bench: start relay %s: %w", e.RelayCommand[0], err)
		}
		g.Go(func() error {
			err := cmd.Wait()
			if gctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("bench: relay process exited: %v", err)
		})
		return &relayRun{pid: cmd.Process.Pid, stop: func() error { cancel(); return g.Wait() }}, nil
	}
	cfg := e.Relay
	cfg.Brokers, cfg.TLS, cfg.SASL = e.Brokers, e.Security.TLS, e.Security.SASL
	n := &atomic.Int64{}
	eng, err := relay.New(e.RelayDB, cfg, relay.WithLogger(e.logger()), relay.WithHooks(countHook{n}))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("bench: %w", err)
	}
	g.Go(func() error { return eng.Run(gctx) })
	return &relayRun{published: n, stop: func() error { cancel(); return g.Wait() }}, nil
}

// deleteTopics removes the run's topics, where the cluster allows it.
func (e *Env) deleteTopics(ctx context.Context, topics ...string) error {
	c := &kafka.Client{Addr: kafka.TCP(e.Brokers...), Timeout: 10 * time.Second}
	if t := kafkax.NewTransport(e.Security); t != nil {
		c.Transport = t
	}
	res, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("bench: delete topics %s: %w", strings.Join(topics, ", "), err)
	}
	var errs []error
	for t, err := range res.Errors {
		if err != nil {
			errs = append(errs, fmt.Errorf("bench: delete topic %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// peakRSS reads VmHWM of pid (0: this process) in MiB, or 0 when the
// kernel does not tell.
func peakRSS(pid int) float64 {
	p := "self"
	if pid > 0 {
		p = strconv.Itoa(pid)
	}
	data, err := os.ReadFile("/proc/" + p + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// resetPeakRSS starts this process's VmHWM afresh (Linux 4.0+), so that it
// measures the phase that follows; it reports whether it could.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}
