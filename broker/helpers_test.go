package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/relay"
)

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("TXMSG_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// testOperatorToken is the operator token of the tests' brokers.
const testOperatorToken = "test-operator-token-0123456789"

// testSecret signs the check-backs of tests that call the Scanner with
// claims of their own.
const testSecret = "txcs_test-secret"

// loopback lets check-backs reach the tests' producers on this host.
func loopback() AddressPolicy { return AddressPolicy{AllowLoopback: true} }

// apiEnv is a Store behind a real HTTP server on loopback, and a Client
// with the operator's token.
type apiEnv struct {
	db     *testenv.Database
	store  *Store
	client *halfmsg.Client
	url    string
}

func newAPIEnv(t *testing.T, opts ...StoreOption) *apiEnv {
	t.Helper()
	return newAPIEnvWith(t, opts, nil)
}

// newAPIEnvWith is newAPIEnv with handler options, which come after the
// operator token.
func newAPIEnvWith(t *testing.T, sopts []StoreOption, hopts []HandlerOption) *apiEnv {
	t.Helper()
	db := testenv.NewDB(t)
	store, err := NewStore(db.DB, append([]StoreOption{WithShards(4), WithAddressPolicy(loopback()),
		WithStoreLogger(testLogger(t))}, sopts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if hopts == nil {
		hopts = []HandlerOption{WithOperatorToken(testOperatorToken)}
	}
	h, err := NewHandler(store, append([]HandlerOption{WithMaxBodyBytes(64 << 10), WithHandlerLogger(testLogger(t))}, hopts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := halfmsg.NewClient(srv.URL, halfmsg.WithToken(testOperatorToken))
	if err != nil {
		t.Fatal(err)
	}
	return &apiEnv{db: db, store: store, client: c, url: srv.URL}
}

// testScanner builds a scanner on store with fast timings that may call
// producers on loopback; tests drive it with Scan.
func testScanner(t *testing.T, store *Store, cfg ScannerConfig) *Scanner {
	t.Helper()
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 300 * time.Millisecond
	}
	if cfg.MaxInterval == 0 {
		cfg.MaxInterval = 400 * time.Millisecond
	}
	cfg.Policy.AllowLoopback = true
	s, err := NewScanner(store, cfg, WithScannerLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// producerServer serves checker at a loopback URL for producer group,
// verifying the group's signature: it registers the group on store (at a
// URL nobody serves) unless it is registered already, so that messages
// naming the returned URL as theirs are signed.
func producerServer(t testing.TB, store *Store, group string, checker checkback.Checker) string {
	t.Helper()
	srv := httptest.NewServer(checkback.Handler(checker, checkback.WithSecret(groupSecret(t, store, group))))
	t.Cleanup(srv.Close)
	return srv.URL
}

// groupSecret registers group on store unless it is registered, and reads
// its secret from the database.
func groupSecret(t testing.TB, store *Store, group string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := store.GroupURL(ctx, group); errors.Is(err, txmsg.ErrNotFound) {
		if err := store.SetGroup(ctx, group, "http://127.0.0.1:9/unused"); err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	var secret string
	if err := store.db.QueryRowContext(ctx, `SELECT checkback_secret FROM txmsg_producer_groups WHERE producer_group = ?`,
		group).Scan(&secret); err != nil {
		t.Fatal(err)
	}
	return secret
}

// waitState scans (when scanner is not nil) until id reaches want.
func waitState(t *testing.T, store *Store, scanner *Scanner, id string, want halfmsg.State, timeout time.Duration) halfmsg.Info {
	t.Helper()
	var info halfmsg.Info
	testenv.Eventually(t, timeout, func() error {
		ctx := context.Background()
		if scanner != nil {
			if _, err := scanner.Scan(ctx); err != nil {
				return err
			}
		}
		var err error
		info, err = store.Get(ctx, id)
		if err != nil {
			return err
		}
		if info.State != want {
			return fmt.Errorf("message %s is %s (checks %d, last %q %q), want %s", id, info.State,
				info.CheckCount, info.LastCheckResult, info.LastCheckError, want)
		}
		return nil
	})
	return info
}

// waitDue waits until every message of ids is prepared and due a check by
// the database's clock, so that one claim finds them all.
func waitDue(t *testing.T, db *testenv.Database, ids ...string) {
	t.Helper()
	args := make([]any, 0, len(ids)+1)
	args = append(args, halfmsg.StatePrepared)
	for _, id := range ids {
		args = append(args, id)
	}
	q := `SELECT COUNT(*) FROM txmsg_half_messages WHERE state = ? AND next_check_at <= UTC_TIMESTAMP(6) AND id IN (?` +
		strings.Repeat(",?", len(ids)-1) + `)`
	testenv.Eventually(t, 10*time.Second, func() error {
		var n int
		if err := db.DB.QueryRowContext(context.Background(), q, args...).Scan(&n); err != nil {
			return err
		}
		if n != len(ids) {
			return fmt.Errorf("%d of %d messages due", n, len(ids))
		}
		return nil
	})
}

// testServerConfig is a broker Config with fast timings for tests.
func testServerConfig(brokers []string) Config {
	return Config{
		Listen:          "127.0.0.1:0",
		OperatorToken:   testOperatorToken,
		CheckbackPolicy: loopback(),
		CheckTimeout:    200 * time.Millisecond,
		MaxChecks:       5,
		MaxInterval:     500 * time.Millisecond,
		CallTimeout:     500 * time.Millisecond,
		Concurrency:     8,
		BacklogInterval: 200 * time.Millisecond,
		// Above the 5 s for which http.Server.Shutdown waits on a connection
		// that never sent a request: a loaded client's transport may dial
		// one for a request that another connection then took, and keep it
		// idle (seen as a shutdown past 3 s, about once in 50 runs beside a
		// CPU burner).
		ShutdownTimeout: 6 * time.Second,
		Relay: relay.Config{
			Brokers:         brokers,
			Shards:          4,
			LeaseTTL:        2 * time.Second,
			Heartbeat:       300 * time.Millisecond,
			PollMax:         50 * time.Millisecond,
			RetryInitial:    20 * time.Millisecond,
			RetryMax:        300 * time.Millisecond,
			BacklogInterval: 200 * time.Millisecond,
			ShutdownTimeout: 3 * time.Second,
		},
	}
}

// runningServer is a Server started in the background.
type runningServer struct {
	*Server
	client  *halfmsg.Client
	cancel  context.CancelFunc
	done    chan error
	once    sync.Once
	stopErr error
}

// stop cancels the server's context and returns Run's error; it may be
// called more than once.
func (r *runningServer) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	r.once.Do(func() {
		select {
		case r.stopErr = <-r.done:
		case <-time.After(20 * time.Second):
			r.stopErr = errors.New("broker did not stop within 20s")
		}
	})
	return r.stopErr
}

func startServer(t *testing.T, db *sql.DB, cfg Config) *runningServer {
	t.Helper()
	return startServerWith(t, db, cfg, WithLogger(testLogger(t)))
}

// startServerWith is startServer with opts (a logger, say) in place of the
// test logger.
func startServerWith(t *testing.T, db *sql.DB, cfg Config, opts ...ServerOption) *runningServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(db, cfg, append(opts, WithListener(ln))...)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningServer{Server: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Errorf("broker stopped with: %v", err)
		}
	})
	c, err := halfmsg.NewClient("http://"+ln.Addr().String(), halfmsg.WithToken(testOperatorToken))
	if err != nil {
		t.Fatal(err)
	}
	r.client = c
	testenv.Eventually(t, 15*time.Second, func() error {
		if !s.Ready() {
			return fmt.Errorf("broker not ready")
		}
		return nil
	})
	return r
}

// recordsByID reads topic and groups its records by txmsg-id.
func recordsByID(t *testing.T, addrs []string, topic string) map[string][]kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := testenv.Records(ctx, addrs, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]kafka.Message{}
	for _, r := range recs {
		id := testenv.HeaderValue(r, "txmsg-id")
		out[id] = append(out[id], r)
	}
	return out
}

// concurrencyProbe counts calls in flight per message and overall.
type concurrencyProbe struct {
	mu       sync.Mutex
	inFlight map[string]int
	total    int
	maxTotal int
	overlaps int
	calls    map[string]int
}

func newProbe() *concurrencyProbe {
	return &concurrencyProbe{inFlight: map[string]int{}, calls: map[string]int{}}
}

func (p *concurrencyProbe) enter(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight[id]++
	if p.inFlight[id] > 1 {
		p.overlaps++
	}
	p.calls[id]++
	p.total++
	p.maxTotal = max(p.maxTotal, p.total)
}

func (p *concurrencyProbe) leave(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight[id]--
	p.total--
}

func (p *concurrencyProbe) snapshot() (overlaps, maxTotal int, calls map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := make(map[string]int, len(p.calls))
	for k, v := range p.calls {
		c[k] = v
	}
	return p.overlaps, p.maxTotal, c
}

var _ http.Handler = (*Handler)(nil)
