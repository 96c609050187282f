// Command txmsg-chaos is txmsg's chaos soak (package internal/chaos): run
// by `make chaos`, it prints one line of figures and exits 0 only if
// nothing was lost, published from a rolled-back transaction, reordered,
// applied twice or stalled. "txmsg-chaos consume" is the consumer program
// the soak starts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg/internal/chaos"
)

func main() {
	// The driver logs each connection the soak killed on purpose.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the exit status: 0 passed, 1 failed, 2 a command-line mistake.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "consume" {
		if err := chaos.RunConsumer(ctx, args[1:], stderr); err != nil && ctx.Err() == nil {
			fmt.Fprintln(stderr, "txmsg-chaos consume:", err)
			return 1
		}
		return 0
	}
	cfg, err := chaos.ParseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "txmsg-chaos:", err)
		return 2
	}
	fig, err := chaos.Run(ctx, cfg, slog.New(slog.NewTextHandler(stderr, nil)))
	if fig != (chaos.Figures{}) {
		fmt.Fprintln(stdout, fig)
	}
	if err != nil {
		fmt.Fprintln(stderr, "txmsg-chaos:", err)
		return 1
	}
	if !fig.OK() {
		return 1
	}
	return 0
}
