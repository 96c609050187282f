package relay

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// txmsgBinary builds cmd/txmsg once per test run.
func txmsgBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "txmsg-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "txmsg")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, "github.com/txmsg/txmsg/cmd/txmsg").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// startRelayProcess runs `txmsg relay` as a child process.
func startRelayProcess(t *testing.T, dsn string, brokers []string, owner string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(txmsgBinary(t), "relay", "--dsn", dsn, "--brokers", strings.Join(brokers, ","),
		"--metrics.listen", "127.0.0.1:0", "--relay.lease_ttl", "2s", "--relay.heartbeat", "300ms",
		"--relay.owner", owner, "--relay.poll_max", "50ms")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("relay %s stderr:\n%s", owner, stderr.String())
		}
	})
	return cmd
}

// The relay binary is killed with SIGKILL mid-stream and started again:
// every committed message is delivered, each key in order.
func TestRelayCrashKill9LosesNothing(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 6)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var wg sync.WaitGroup
	var produced int
	wg.Add(1)
	go func() {
		defer wg.Done()
		seq := map[string]int{}
		for ctx.Err() == nil {
			var msgs []txmsg.Message
			for j := range 10 {
				key := fmt.Sprintf("k%d", (produced+j)%20)
				seq[key]++
				msgs = append(msgs, msg("crash", key, seq[key]))
			}
			if err := publishTx(context.Background(), d.DB, true, msgs...); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			produced += len(msgs)
			time.Sleep(5 * time.Millisecond)
		}
	}()

	first := startRelayProcess(t, d.DSN, k.Addrs, "first")
	testenv.Eventually(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		msgs, _, err := delivered(ctx, k.Addrs, "crash")
		if err != nil {
			return err
		}
		if len(msgs) < 200 {
			return fmt.Errorf("%d delivered before the crash", len(msgs))
		}
		return nil
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()

	second := startRelayProcess(t, d.DSN, k.Addrs, "second")
	time.Sleep(time.Second)
	cancel()
	wg.Wait()
	msgs := waitDelivered(t, k.Addrs, "crash", produced, 30*time.Second)
	if len(msgs) != produced {
		t.Fatalf("%d distinct messages delivered, %d produced", len(msgs), produced)
	}
	checkOrder(t, msgs, nil)

	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("relay after SIGTERM: %v", err)
	}
	if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_relay_leases WHERE owner = 'second'"); n != 0 {
		t.Errorf("%d leases still held after SIGTERM", n)
	}
}

// Debian's kcat (librdkafka), a third-party client, reads what the relay
// wrote: keys, values and the txmsg headers survive the wire.
func TestRelayEndToEndWithKcat(t *testing.T) {
	t.Parallel()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (apt-get install kcat): skipping the third-party client check")
	}
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	startEngine(t, d.DB, testConfig(k.Addrs))
	ctx := context.Background()
	want := map[string]string{}
	for i := range 30 {
		m := msg("kcat", fmt.Sprintf("key-%d", i%4), i)
		m.ID = fmt.Sprintf("id-%d", i)
		m.Headers = []txmsg.Header{{Key: "trace", Value: []byte("t" + m.ID)}}
		want[m.ID] = string(m.Key) + "|" + string(m.Value)
		if err := publishTx(ctx, d.DB, true, m); err != nil {
			t.Fatal(err)
		}
	}
	waitDelivered(t, k.Addrs, "kcat", 30, 10*time.Second)

	out, err := exec.Command(kcat, "-C", "-b", k.Addrs[0], "-t", "kcat", "-e", "-q", "-f", "%k|%s|%h\n").Output()
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	got := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.SplitN(line, "|", 3)
		if len(parts) != 3 {
			t.Fatalf("kcat line %q", line)
		}
		var id string
		for _, h := range strings.Split(parts[2], ",") {
			if v, ok := strings.CutPrefix(h, txmsg.HeaderID+"="); ok {
				id = v
			}
		}
		if want[id] != parts[0]+"|"+parts[1] {
			t.Errorf("kcat read id %q as %q, want %q", id, parts[0]+"|"+parts[1], want[id])
		}
		if !strings.Contains(parts[2], "trace=t"+id) || !strings.Contains(parts[2], txmsg.HeaderSource+"=outbox") {
			t.Errorf("kcat headers %q lack trace or source", parts[2])
		}
		got[id] = true
	}
	if len(got) != len(want) {
		t.Fatalf("kcat read %d distinct messages, want %d", len(got), len(want))
	}
}
