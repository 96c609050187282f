package chaos

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// Config is one soak run. Zero fields take the defaults noted; ParseFlags
// reads them from a command line.
type Config struct {
	// Duration is how long producers write and faults strike (default 5m).
	Duration time.Duration
	// Drain bounds the wait, once the faults stopped, for every committed
	// message to reach Kafka and the consumers (default 90s).
	Drain time.Duration
	// DSN names the MariaDB/MySQL server: the run creates a fresh database
	// there and drops it at the end (default $TXMSG_TEST_MYSQL_DSN, else
	// root@tcp(127.0.0.1:3306)/test).
	DSN string
	// Txmsg is the txmsg binary the daemons run from (default bin/txmsg).
	Txmsg string
	// Consumer is the program run as a consumer group member, with the
	// argument "consume" (default: this program).
	Consumer string
	// Workdir receives the processes' logs (default: a new temporary
	// directory, removed after a passing run).
	Workdir string
	// Keep keeps the database and the workdir after the run.
	Keep bool
	// Seed seeds the fault schedule (default: from the clock).
	Seed uint64
	// Relays, Brokers and Consumers are the processes of each kind
	// (defaults 3, 2 and 2).
	Relays, Brokers, Consumers int
	// Rate and HalfRate are outbox and half-message transactions per second
	// (defaults 100 and 20).
	Rate, HalfRate float64
	// LeaseTTL is the daemons' relay.lease_ttl (default 3s).
	LeaseTTL time.Duration
	// FaultEvery is the mean gap between two faults (default 2s).
	FaultEvery time.Duration
}

// ParseFlags reads a Config from args; usage goes to out.
func ParseFlags(args []string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("txmsg-chaos", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&c.Duration, "duration", 5*time.Minute, "how long producers write and faults strike")
	fs.DurationVar(&c.Drain, "drain", 90*time.Second, "longest wait for everything to arrive once the faults stopped")
	fs.StringVar(&c.DSN, "dsn", "", "MariaDB/MySQL server; a fresh database is created there (default $TXMSG_TEST_MYSQL_DSN)")
	fs.StringVar(&c.Txmsg, "txmsg", "bin/txmsg", "the txmsg binary")
	fs.StringVar(&c.Consumer, "consumer", "", "the consumer program, run with 'consume' (default: this program)")
	fs.StringVar(&c.Workdir, "workdir", "", "directory for the processes' logs (default: a new temporary one)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the database and the workdir after the run")
	fs.Uint64Var(&c.Seed, "seed", 0, "seed of the fault schedule (default: from the clock)")
	fs.IntVar(&c.Relays, "relays", 3, "txmsg relay processes")
	fs.IntVar(&c.Brokers, "brokers", 2, "txmsg broker processes")
	fs.IntVar(&c.Consumers, "consumers", 2, "consumer group members")
	fs.Float64Var(&c.Rate, "rate", 100, "outbox transactions per second")
	fs.Float64Var(&c.HalfRate, "half-rate", 20, "half-message transactions per second")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 3*time.Second, "relay.lease_ttl of the daemons")
	fs.DurationVar(&c.FaultEvery, "fault-every", 2*time.Second, "mean gap between two faults")
	fs.Usage = func() {
		fmt.Fprintln(out, "Usage: txmsg-chaos [flags]\n\nThe chaos soak: see RELIABILITY.md. Prints one line of figures and\nexits 0 only if lost=phantom=reorders=effects_twice=stalled=0.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, c.Validate()
}

// Validate fills in defaults and checks every field, naming the bad one.
func (c *Config) Validate() error {
	if c.DSN == "" {
		c.DSN = os.Getenv("TXMSG_TEST_MYSQL_DSN")
	}
	if c.DSN == "" {
		c.DSN = "root@tcp(127.0.0.1:3306)/test?parseTime=true"
	}
	if c.Consumer == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("chaos: find this program to run as the consumer: %w", err)
		}
		c.Consumer = self
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	var errs []error
	check := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf("chaos: "+format, args...))
		}
	}
	check(c.Duration < time.Second || c.Duration > 24*time.Hour, "--duration %v: want 1s to 24h", c.Duration)
	check(c.Drain < time.Second || c.Drain > time.Hour, "--drain %v: want 1s to 1h", c.Drain)
	check(c.Relays < 1 || c.Relays > 16, "--relays %d: want 1 to 16", c.Relays)
	check(c.Brokers < 1 || c.Brokers > 16, "--brokers %d: want 1 to 16", c.Brokers)
	check(c.Consumers < 1 || c.Consumers > 16, "--consumers %d: want 1 to 16", c.Consumers)
	check(c.Rate <= 0 || c.Rate > 10000, "--rate %v: want more than 0, at most 10000", c.Rate)
	check(c.HalfRate <= 0 || c.HalfRate > 1000, "--half-rate %v: want more than 0, at most 1000", c.HalfRate)
	check(c.LeaseTTL < time.Second || c.LeaseTTL > time.Minute, "--lease-ttl %v: want 1s to 1m", c.LeaseTTL)
	check(c.FaultEvery < 100*time.Millisecond, "--fault-every %v: want at least 100ms", c.FaultEvery)
	if _, err := os.Stat(c.Txmsg); err != nil {
		errs = append(errs, fmt.Errorf("chaos: --txmsg %s: %w (go build -o bin/txmsg ./cmd/txmsg)", c.Txmsg, err))
	}
	return errors.Join(errs...)
}
