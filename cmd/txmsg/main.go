// Command txmsg runs the txmsg daemons and tools: the relay, the half-message
// broker, schema migrations, dead-letter and half-message administration, an
// embedded development Kafka, and a one-process demo. Run `txmsg help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/go-sql-driver/mysql"
	"github.com/spf13/pflag"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// env is what a command writes to.
type env struct {
	stdout io.Writer
	stderr io.Writer
	// fitProcs lets a daemon fit GOMAXPROCS to its load (procs.Govern):
	// the binary's own process only, since tests share theirs.
	fitProcs bool
}

func commands() []command {
	return []command{
		{"migrate", "apply or revert the schema: migrate up|down [N]|status", runMigrate},
		{"relay", "relay the transactional outbox to Kafka", runRelay},
		{"broker", "serve the half-message broker API with check-back", runBroker},
		{"outbox", "dead-letter administration: outbox dead list|retry ID...|--all", runOutbox},
		{"half", "half-message administration: half list|resolve ID commit|rollback", runHalf},
		{"group", "producer groups of the broker: group create|rotate|list|delete", runGroup},
		{"devkafka", "run an in-memory Kafka-protocol broker (kfake) for development", runDevKafka},
		{"dev", "one-process demo: devkafka, migrations, relay, producer and consumer", runDev},
		{"bench", "measure latency and drain throughput on your MySQL and Kafka: bench latency|drain", runBench},
		{"version", "print the version", runVersion},
	}
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// errHelp reports that help was printed: exit status 0.
var errHelp = errors.New("help printed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal starts a graceful shutdown, a second one kills
	// the process the default way.
	context.AfterFunc(ctx, stop)
	// The driver's own logger writes unstructured lines about broken
	// connections to stderr; the errors it logs are also returned to us.
	_ = mysql.SetLogger(mysql.Logger(discardLogger{}))
	code := run(ctx, os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr, fitProcs: true})
	stop()
	os.Exit(code)
}

type discardLogger struct{}

func (discardLogger) Print(...any) {}

// run dispatches args to a subcommand and returns the exit status: 0 on
// success, 1 on failure, 2 on a usage error.
func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		printUsage(e.stderr)
		return 2
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		if len(args) > 1 {
			return run(ctx, []string{args[1], "--help"}, e)
		}
		printUsage(e.stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(ctx, e, args[1:])
		var ue usageError
		switch {
		case err == nil, errors.Is(err, errHelp):
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "txmsg %s: %v\nRun 'txmsg %s --help' for usage.\n", name, oneLine(err), name)
			return 2
		default:
			fmt.Fprintf(e.stderr, "txmsg %s: %v\n", name, oneLine(err))
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "txmsg: unknown command %q\nRun 'txmsg help' for the list.\n", name)
	return 2
}

// oneLine joins the lines of a (possibly joined) error with "; ".
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "txmsg: transactional messaging for MySQL and Kafka")
	fmt.Fprintln(w, "\nUsage: txmsg COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nDaemons read --config FILE (YAML), TXMSG_* environment variables and flags;")
	fmt.Fprintln(w, "flags win over the environment, which wins over the file. See configs/*.yaml.")
	fmt.Fprintln(w, "Run 'txmsg COMMAND --help' for a command's flags.")
}

// newFlagSet returns a FlagSet whose errors parse reports, not pflag.
func newFlagSet(name, synopsis string, e *env) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "Usage: txmsg %s\n\nFlags:\n%s", synopsis, fs.FlagUsages())
	}
	return fs
}

// parse parses args into fs: --help prints the usage and returns errHelp,
// a bad flag returns a usageError.
func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			// pflag has printed the usage already.
			return errHelp
		}
		return usageError{err}
	}
	return nil
}
