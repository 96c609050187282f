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
	"time"

	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/txmsg/txmsg"
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
	// Relays is how many relay engines (or processes of RelayCommand) run
	// side by side, sharing the shards (0: one).
	Relays int
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

// relayRun is the relays started for one phase.
type relayRun struct {
	stop func() error
	// pids are the relay processes', none in-process.
	pids []int
}

// relays is how many relays run.
func (e *Env) relays() int { return max(e.Relays, 1) }

// startRelay starts the relay engines in-process, or the relay command's
// processes, and returns how to stop them. ctx bounds their life.
func (e *Env) startRelay(ctx context.Context) (*relayRun, error) {
	ctx, cancel := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(ctx)
	rl := &relayRun{stop: func() error { cancel(); return g.Wait() }}
	for i := range e.relays() {
		if err := e.startOne(gctx, g, i, rl); err != nil {
			return nil, errors.Join(err, rl.stop())
		}
	}
	return rl, nil
}

// startOne starts relay i of rl in g.
func (e *Env) startOne(ctx context.Context, g *errgroup.Group, i int, rl *relayRun) error {
	if len(e.RelayCommand) > 0 {
		cmd := exec.CommandContext(ctx, e.RelayCommand[0], e.RelayCommand[1:]...)
		if e.relays() > 1 {
			// Each its own name in the lease table, should --relay.owner
			// have given them one.
			cmd.Args = append(cmd.Args, "--relay.owner="+relay.DefaultOwner()+"-"+strconv.Itoa(i))
		}
		cmd.Env = append(os.Environ(), e.RelayEnv...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 30 * time.Second
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("bench: start relay %s: %w", e.RelayCommand[0], err)
		}
		rl.pids = append(rl.pids, cmd.Process.Pid)
		g.Go(func() error {
			err := cmd.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("bench: relay process exited: %v", err)
		})
		return nil
	}
	cfg := e.Relay
	cfg.Brokers, cfg.TLS, cfg.SASL = e.Brokers, e.Security.TLS, e.Security.SASL
	if e.relays() > 1 {
		cfg.Owner = relay.DefaultOwner() + "-" + strconv.Itoa(i)
	}
	eng, err := relay.New(e.RelayDB, cfg, relay.WithLogger(e.logger()))
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	g.Go(func() error { return eng.Run(ctx) })
	return nil
}

// waitShared waits until each of the n relays holds its fair share of the
// shards, as they do once their leases settled: a relay joining takes
// shards from the others, and a moving shard waits for its release.
func (e *Env) waitShared(ctx context.Context, n int, timeout time.Duration) error {
	shards := e.Relay.Shards
	if shards == 0 {
		shards = relay.DefaultConfig().Shards
	}
	fair := (shards + n - 1) / n
	deadline := time.Now().Add(timeout)
	var owners, most int
	for {
		err := e.DB.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(MAX(c), 0) FROM (SELECT owner, COUNT(*) c FROM txmsg_relay_leases
WHERE source = ? AND owner <> '' AND expires_at > UTC_TIMESTAMP(6) GROUP BY owner) o`, txmsg.SourceOutbox).Scan(&owners, &most)
		if err != nil {
			return fmt.Errorf("bench: read the relays' leases: %w", err)
		}
		if owners == n && most <= fair {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: the %d relays did not share the shards within %v: %d hold leases, the busiest %d shards (fair share %d)",
				n, timeout, owners, most, fair)
		}
		e.progressf("relays: %d of %d hold shards, the busiest %d (fair share %d)", owners, n, most, fair)
		if !sleepUntil(ctx, time.Now().Add(time.Second)) {
			return ctx.Err()
		}
	}
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
