package chaos

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Process kinds.
const (
	kindRelay    = "relay"
	kindBroker   = "broker"
	kindConsumer = "consumer"
)

// fleet is every child process of the soak. Processes live as long as the
// soak's context, not a fault's: a fault kills and restarts them.
type fleet struct {
	ctx   context.Context
	log   *slog.Logger
	procs []*proc
	wg    sync.WaitGroup
	exits atomic.Int64 // exits nobody asked for
}

// fleetSpec is what the processes need to know.
type fleetSpec struct {
	cfg      Config
	dsn      string
	kafka    string
	workdir  string
	topics   []string // topics the consumers read
	brokerAt []string // HOST:PORT of each broker's API
	// tokenFile holds the brokers' operator token: they run authenticated,
	// as in production.
	tokenFile string
}

// newFleet describes the processes; start runs them.
func newFleet(ctx context.Context, log *slog.Logger, s fleetSpec) *fleet {
	f := &fleet{ctx: ctx, log: log}
	add := func(kind string, n int, path string, args func(i int) []string) {
		for i := range n {
			name := kind + "-" + strconv.Itoa(i+1)
			f.procs = append(f.procs, &proc{name: name, kind: kind, path: path, args: args(i),
				logPath: filepath.Join(s.workdir, name+".log")})
		}
	}
	lease := s.cfg.LeaseTTL.String()
	common := []string{"--dsn", s.dsn, "--brokers", s.kafka, "--metrics.listen=", "--log.level", "warn",
		"--relay.lease_ttl", lease, "--relay.retry_max", "2s"}
	add(kindRelay, s.cfg.Relays, s.cfg.Txmsg, func(int) []string {
		return append([]string{"relay"}, common...)
	})
	add(kindBroker, s.cfg.Brokers, s.cfg.Txmsg, func(i int) []string {
		return append(append([]string{"broker"}, common...), "--listen", s.brokerAt[i],
			"--broker.auth.operator_token_file", s.tokenFile, "--checkback.allow_loopback=true",
			"--checkback.timeout", "1s", "--checkback.scan", "@every 500ms", "--checkback.max_interval", "5s")
	})
	add(kindConsumer, s.cfg.Consumers, s.cfg.Consumer, func(int) []string {
		return []string{"consume", "--dsn", s.dsn, "--brokers", s.kafka, "--topics", strings.Join(s.topics, ",")}
	})
	return f
}

// freeAddrs returns n loopback addresses with free ports, for the brokers'
// APIs: a broker restarts on the same address, where producers find it.
func freeAddrs(n int) ([]string, error) {
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("chaos: find a free port: %w", err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	return addrs, nil
}

// start starts p on the fleet's context.
func (f *fleet) start(p *proc) error {
	return p.start(f.ctx, &f.wg, func(p *proc, err error) {
		f.exits.Add(1)
		f.log.Warn("process exited unasked", slog.String("proc", p.name), slog.Any("err", err),
			slog.String("log", p.logPath))
	})
}

// startAll starts every process.
func (f *fleet) startAll() error {
	for _, p := range f.procs {
		if err := f.start(p); err != nil {
			return err
		}
	}
	return nil
}

// pick returns a random process of kind.
func (f *fleet) pick(rng *rand.Rand, kind string) *proc {
	var of []*proc
	for _, p := range f.procs {
		if p.kind == kind {
			of = append(of, p)
		}
	}
	return of[rng.IntN(len(of))]
}

// heal resumes paused processes and starts those that are not running.
func (f *fleet) heal() error {
	var errs []error
	for _, p := range f.procs {
		if err := p.pause(false); err != nil {
			errs = append(errs, err)
		}
		if !p.running() {
			if err := f.start(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// dumpStacks has every running process print its goroutines' stacks into
// its log and exit.
func (f *fleet) dumpStacks() error {
	var errs []error
	for _, p := range f.procs {
		errs = append(errs, p.dumpStacks())
	}
	return errors.Join(errs...)
}

// stop kills every process and waits for them.
func (f *fleet) stop() error {
	var errs []error
	for _, p := range f.procs {
		if err := p.kill(); err != nil {
			errs = append(errs, err)
		}
	}
	f.wg.Wait()
	return errors.Join(errs...)
}

// writeOperatorToken writes a random operator token into dir and returns the
// file's path.
func writeOperatorToken(dir string) (string, error) {
	b := make([]byte, 32)
	if _, err := cryptorand.Read(b); err != nil {
		return "", fmt.Errorf("chaos: operator token: %w", err)
	}
	path := filepath.Join(dir, "operator-token")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(b)), 0o600); err != nil {
		return "", fmt.Errorf("chaos: operator token: %w", err)
	}
	return path, nil
}
