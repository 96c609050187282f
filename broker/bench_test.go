package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
)

// runConcurrent runs op n times on p goroutines and returns the wall time.
func runConcurrent(b *testing.B, n, p int, op func(i int) error) time.Duration {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, p)
	start := time.Now()
	for range p {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return elapsed
}

// BenchmarkBrokerHalfVsPlain compares, in one run on one database, plain
// local transactions (one business insert) with the same transaction sent
// as a half message (prepare over HTTP, local transaction with the ledger
// row, commit over HTTP), at 8 and 32 concurrent producers, with
// authentication off and with the producer group's token (a token lookup
// per request), and at 32 producers also with synchronous ends
// (halfmsg.WithProducerSyncEnd). The half rounds' time includes the Flush
// of the commit calls still in flight in the background. It reports both
// rates, their ratio (the target is >= 0.40 at 32 producers) and the
// server's statements and commits per half message (server-wide counters:
// other work on the server counts too).
func BenchmarkBrokerHalfVsPlain(b *testing.B) {
	db := benchDB(b)
	ctx := context.Background()
	if _, err := db.DB.ExecContext(ctx, `CREATE TABLE bench_biz (id VARCHAR(64) PRIMARY KEY, payload VARCHAR(255) NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	store, err := NewStore(db.DB, WithAddressPolicy(loopback()))
	if err != nil {
		b.Fatal(err)
	}
	g, err := store.PutGroup(ctx, Actor{}, "bench", "http://127.0.0.1:1/checkback", false)
	if err != nil {
		b.Fatal(err)
	}
	var round atomic.Int64
	for _, auth := range []bool{false, true} {
		hopt, copts := WithAuthDisabled(), []halfmsg.ClientOption(nil)
		if auth {
			hopt, copts = WithOperatorToken("bench-operator-token-0123456789"), []halfmsg.ClientOption{halfmsg.WithToken(g.Token)}
		}
		h, err := NewHandler(store, hopt)
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(h)
		defer srv.Close()
		client, err := halfmsg.NewClient(srv.URL, copts...)
		if err != nil {
			b.Fatal(err)
		}
		type variant struct {
			name      string
			producers int
			opts      []halfmsg.ProducerOption
		}
		variants := []variant{{"producers=8", 8, nil}, {"producers=32", 32, nil},
			{"producers=32/end=sync", 32, []halfmsg.ProducerOption{halfmsg.WithProducerSyncEnd()}}}
		if auth {
			variants = variants[1:2]
		}
		for _, v := range variants {
			producer, err := halfmsg.NewProducer(client, "bench", db.DB, v.opts...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				if err := producer.Close(ctx); err != nil {
					b.Error(err)
				}
			})
			p := v.producers
			b.Run(fmt.Sprintf("auth=%t/%s", auth, v.name), func(b *testing.B) {
				r := round.Add(1)
				plainOp := func(i int) error {
					tx, err := db.DB.BeginTx(ctx, nil)
					if err != nil {
						return err
					}
					if _, err := tx.ExecContext(ctx, `INSERT INTO bench_biz (id, payload) VALUES (?, ?)`,
						fmt.Sprintf("plain-%d-%d", r, i), "order created"); err != nil {
						return fmt.Errorf("%w (rollback: %v)", err, tx.Rollback())
					}
					return tx.Commit()
				}
				halfOp := func(i int) error {
					id := fmt.Sprintf("half-%d-%d", r, i)
					return producer.SendInTransaction(ctx, txmsg.Message{ID: id, Topic: "bench", Key: []byte(id), Value: []byte("order created")},
						func(ctx context.Context, tx *sql.Tx) error {
							_, err := tx.ExecContext(ctx, `INSERT INTO bench_biz (id, payload) VALUES (?, ?)`, id, "order created")
							return err
						})
				}
				// Alternate short rounds of each, so that load from elsewhere on
				// the machine falls on both alike.
				var plain, half time.Duration
				var stmts, commits int64
				const rounds = 4
				for k := range rounds {
					lo, hi := b.N*k/rounds, b.N*(k+1)/rounds
					plain += runConcurrent(b, hi-lo, p, func(i int) error { return plainOp(lo + i) })
					q0, c0 := serverCounters(b, db.DB)
					start := time.Now()
					runConcurrent(b, hi-lo, p, func(i int) error { return halfOp(lo + i) })
					if err := producer.Flush(ctx); err != nil {
						b.Fatal(err)
					}
					half += time.Since(start)
					q1, c1 := serverCounters(b, db.DB)
					stmts, commits = stmts+q1-q0, commits+c1-c0
				}
				plainRate := float64(b.N) / plain.Seconds()
				halfRate := float64(b.N) / half.Seconds()
				b.ReportMetric(plainRate, "plain_tx/s")
				b.ReportMetric(halfRate, "half_tx/s")
				b.ReportMetric(halfRate/plainRate, "half/plain")
				b.ReportMetric(float64(stmts)/float64(b.N), "half_stmts/msg")
				b.ReportMetric(float64(commits)/float64(b.N), "half_handler_commits/msg")
			})
		}
	}
}

// serverCounters returns the server's statement count (Questions, less the
// one asking) and its storage engine commits (Handler_commit: one per
// transaction, autocommitted statements included, reads too).
func serverCounters(b *testing.B, db *sql.DB) (stmts, commits int64) {
	b.Helper()
	rows, err := db.Query(`SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Handler_commit')`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name string
			n    int64
		)
		if err := rows.Scan(&name, &n); err != nil {
			b.Fatal(err)
		}
		switch name {
		case "Questions":
			stmts = n - 1
		case "Handler_commit":
			commits = n
		}
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return stmts, commits
}

// BenchmarkBrokerCommitToKafka measures committed → in Kafka latency at a
// steady 500 commits/s through a running Server (relay engine included),
// reporting p50 and p99. Latency is from the commit call's return to the
// record's produce timestamp.
func BenchmarkBrokerCommitToKafka(b *testing.B) {
	db := benchDB(b)
	kafka := testenv.NewKafka(b, 6)
	cfg := testServerConfig(kafka.Addrs)
	// Every message is prepared up front: no check-back may resolve one
	// before its commit. The relay runs with the broker's default polling.
	cfg.CheckTimeout = time.Hour
	cfg.Relay.PollMin, cfg.Relay.PollMax = 0, 0
	srv := startBenchServer(b, db.DB, cfg)
	ctx := context.Background()
	const rate = 500
	topic := "bench-latency"
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("lat-%d", i)
		if _, err := srv.Store().Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "bench",
			Message: txmsg.Message{ID: ids[i], Topic: topic, Key: []byte(ids[i]), Value: []byte("v")}}); err != nil {
			b.Fatal(err)
		}
	}
	committedAt := make(map[string]time.Time, b.N)
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	b.ResetTimer()
	for _, id := range ids {
		<-tick.C
		if _, err := srv.Store().Commit(ctx, id); err != nil {
			b.Fatal(err)
		}
		committedAt[id] = time.Now()
	}
	var lat []time.Duration
	benchPoll(b, 30*time.Second, func() error {
		recs, err := testenv.Records(ctx, kafka.Addrs, topic)
		if err != nil {
			return err
		}
		if len(recs) < b.N {
			return fmt.Errorf("%d of %d records in Kafka", len(recs), b.N)
		}
		for _, r := range recs {
			lat = append(lat, max(r.Time.Sub(committedAt[testenv.HeaderValue(r, txmsg.HeaderID)]), 0))
		}
		return nil
	})
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
}

// BenchmarkBrokerStrandedCheckback prepares b.N messages nobody commits and
// measures how long check-back takes to resolve them all through the ledger
// (half committed, half rolled back), at the default checkback.concurrency,
// then at 16 and 64, with the default call timeout. resolve_s runs from the
// last prepare until none is left prepared; compare it with bound_s = 2 ×
// (check timeout + scan interval). max_inflight is the most requests the
// producer served at once, checks/request how many checks a request
// carried on average, producer_conns the connections it accepted, and
// failed_calls the calls that failed (timeouts included). claim_tx/check and
// record_tx/check count the broker's own claim and record transactions;
// commits/check and stmts/check are the server's Handler_commit and
// Questions over the resolution divided by b.N (server-wide: other clients
// count too).
func BenchmarkBrokerStrandedCheckback(b *testing.B) {
	cs := []int{DefaultConfig().Concurrency}
	for _, c := range []int{16, 64} {
		if !slices.Contains(cs, c) {
			cs = append(cs, c)
		}
	}
	for _, c := range cs {
		b.Run(fmt.Sprintf("concurrency=%d", c), func(b *testing.B) { benchStranded(b, c, nil) })
	}
	// One key: check-back resolves its messages oldest first, and each
	// commit reads what it waits for (see latestPrepared).
	b.Run(fmt.Sprintf("concurrency=%d/key=one", cs[0]), func(b *testing.B) { benchStranded(b, cs[0], []byte("hot")) })
}

// benchStranded is BenchmarkBrokerStrandedCheckback at concurrency, every
// message with key (nil: none).
func benchStranded(b *testing.B, concurrency int, key []byte) {
	db := benchDB(b)
	kafka := testenv.NewKafka(b, 6)
	ctx := context.Background()
	ledger, err := checkback.LedgerChecker(db.DB)
	if err != nil {
		b.Fatal(err)
	}
	gauge := &gaugedLedger{ledger: ledger}
	cfg := testServerConfig(kafka.Addrs)
	cfg.CheckTimeout = time.Second
	cfg.ScanSchedule = "@every 1s"
	cfg.Concurrency = concurrency
	// The default call timeout: the tests' 500ms would give up on calls
	// that a loaded machine serves late, and ask again a backoff later.
	cfg.CallTimeout, cfg.MaxInterval = DefaultConfig().CallTimeout, DefaultConfig().MaxInterval
	store, err := NewStore(db.DB, WithShards(cfg.Relay.Shards), WithCheckTimeout(cfg.CheckTimeout), WithAddressPolicy(loopback()))
	if err != nil {
		b.Fatal(err)
	}
	var conns atomic.Int64
	producer := httptest.NewUnstartedServer(checkback.Handler(gauge, checkback.WithSecret(groupSecret(b, store, "bench"))))
	producer.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	producer.Start()
	defer producer.Close()
	if err := store.SetGroup(ctx, "bench", producer.URL); err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		id := fmt.Sprintf("stranded-%d", i)
		if _, err := store.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "bench",
			Message: txmsg.Message{ID: id, Topic: "bench-stranded", Key: key, Value: []byte("v")}}); err != nil {
			b.Fatal(err)
		}
		if i%2 == 0 {
			if err := recordInTx(ctx, db.DB, ledger, id, true); err != nil {
				b.Fatal(err)
			}
		}
	}
	q0, c0 := serverCounters(b, db.DB)
	start := time.Now()
	b.ResetTimer()
	calls := &callOutcomes{}
	startBenchServer(b, db.DB, cfg, WithHooks(calls))
	// Whether any message is left prepared, read from the due index alone:
	// PreparedBacklog's count, every 10ms over thousands of rows, kept the
	// server busier than the check-backs it measures.
	benchPoll(b, 5*time.Minute, func() error {
		var left bool
		err := db.DB.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM txmsg_half_messages WHERE state = ?)`,
			halfmsg.StatePrepared).Scan(&left)
		if err == nil && left {
			err = errors.New("messages still prepared")
		}
		return err
	})
	b.StopTimer()
	elapsed := time.Since(start)
	q1, c1 := serverCounters(b, db.DB)
	b.ReportMetric(elapsed.Seconds(), "resolve_s")
	b.ReportMetric(float64(c1-c0)/float64(b.N), "commits/check")
	b.ReportMetric(float64(q1-q0)/float64(b.N), "stmts/check")
	// A claim transaction stamps its rows' last_check_at, and a record
	// transaction its history rows' checked_at, with one UTC_TIMESTAMP(6):
	// distinct stamps count this run's own transactions.
	var claimTx, recordTx int64
	if err := db.DB.QueryRowContext(ctx, `SELECT (SELECT COUNT(DISTINCT last_check_at) FROM txmsg_half_messages),
  (SELECT COUNT(DISTINCT checked_at) FROM txmsg_half_checks)`).Scan(&claimTx, &recordTx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(claimTx)/float64(b.N), "claim_tx/check")
	b.ReportMetric(float64(recordTx)/float64(b.N), "record_tx/check")
	b.ReportMetric(float64(gauge.top.Load()), "max_inflight")
	b.ReportMetric(float64(b.N)/float64(gauge.calls.Load()), "checks/request")
	b.ReportMetric(float64(conns.Load()), "producer_conns")
	b.ReportMetric(float64(calls.failed.Load()), "failed_calls")
	b.ReportMetric(float64(cfg.Concurrency), "concurrency")
	b.ReportMetric((2 * (cfg.CheckTimeout + time.Second)).Seconds(), "bound_s")
}

// gaugedLedger is the producer's ledger, counting the check-back requests it
// serves and the most it served at once.
type gaugedLedger struct {
	ledger               *checkback.Ledger
	inFlight, top, calls atomic.Int64
}

func (g *gaugedLedger) enter() func() {
	g.calls.Add(1)
	n := g.inFlight.Add(1)
	for {
		t := g.top.Load()
		if n <= t || g.top.CompareAndSwap(t, n) {
			break
		}
	}
	return func() { g.inFlight.Add(-1) }
}

func (g *gaugedLedger) Check(ctx context.Context, req checkback.Request) (checkback.Answer, error) {
	defer g.enter()()
	return g.ledger.Check(ctx, req)
}

func (g *gaugedLedger) CheckBatch(ctx context.Context, reqs []checkback.Request) ([]checkback.Answer, error) {
	defer g.enter()()
	return g.ledger.CheckBatch(ctx, reqs)
}

// callOutcomes counts the check-back calls that failed (a timeout, a
// connection error), which the broker counts as unknown answers.
type callOutcomes struct{ failed atomic.Int64 }

func (c *callOutcomes) Checked(outcome string, _ time.Duration) {
	if outcome == "error" {
		c.failed.Add(1)
	}
}

// benchDB is a fresh database whose pool interpolates parameters client
// side (interpolateParams=true), saving the prepare and close round trips
// of every statement; plain and half transactions share it.
func benchDB(b *testing.B) *testenv.Database {
	b.Helper()
	d := testenv.NewDB(b)
	cfg, err := mysql.ParseDSN(d.DSN)
	if err != nil {
		b.Fatal(err)
	}
	cfg.InterpolateParams = true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(64)
	b.Cleanup(func() { db.Close() })
	return &testenv.Database{DB: db, DSN: cfg.FormatDSN(), Name: d.Name}
}

// startBenchServer runs a Server until the benchmark ends.
func startBenchServer(b *testing.B, db *sql.DB, cfg Config, opts ...ServerOption) *Server {
	b.Helper()
	s, err := NewServer(db, cfg, opts...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("broker: %v", err)
		}
	})
	benchPoll(b, 15*time.Second, func() error {
		if !s.Ready() {
			return errors.New("broker not ready")
		}
		return nil
	})
	return s
}

// benchPoll polls cond every 10ms until it returns nil, failing the
// benchmark with cond's last error after timeout.
func benchPoll(b *testing.B, timeout time.Duration, cond func() error) {
	b.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			b.Fatalf("not within %v: %v", timeout, err)
		}
	}
}
