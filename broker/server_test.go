package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
	"github.com/txmsg/txmsg/checkback"
	"github.com/txmsg/txmsg/internal/testenv"
)

// waitDelivered polls until every id is in state want.
func waitStates(t *testing.T, c *halfmsg.Client, ids []string, want halfmsg.State, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, func() error {
		for _, id := range ids {
			info, err := c.Get(context.Background(), id)
			if err != nil {
				return err
			}
			if info.State != want {
				return fmt.Errorf("%s is %s (checks %d, last %q), want %s", id, info.State, info.CheckCount, info.LastCheckResult, want)
			}
		}
		return nil
	})
}

func TestBrokerServerDeliversCommittedOnly(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	kafka := testenv.NewKafka(t, 3)
	cfg := testServerConfig(kafka.Addrs)
	srv := startServer(t, db.DB, cfg)
	ctx := context.Background()
	c := srv.client
	ledger, err := checkback.LedgerChecker(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	ledgerURL := producerServer(t, srv.Store(), "g", ledger)
	unknownURL := producerServer(t, srv.Store(), "g", checkback.CheckerFunc(func(context.Context, checkback.Request) (checkback.Answer, error) {
		return checkback.AnswerUnknown, nil
	}))
	const topic = "half-e2e"
	prep := func(id, url string, maxChecks int) {
		t.Helper()
		_, err := c.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g", CheckbackURL: url, MaxChecks: maxChecks,
			CheckTimeout: 100 * time.Millisecond,
			Message: txmsg.Message{ID: id, Topic: topic, Key: []byte("key-" + id), Value: []byte("value-" + id),
				Headers: []txmsg.Header{{Key: "trace", Value: []byte("t-" + id)}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	prep("committed", ledgerURL, 0)
	for range 3 {
		if _, err := c.Commit(ctx, "committed"); err != nil {
			t.Fatal(err)
		}
	}
	prep("rolled-back", ledgerURL, 0)
	if _, err := c.Rollback(ctx, "rolled-back"); err != nil {
		t.Fatal(err)
	}
	prep("checked-commit", ledgerURL, 0)
	if err := recordInTx(ctx, db.DB, ledger, "checked-commit", true); err != nil {
		t.Fatal(err)
	}
	prep("checked-rollback", ledgerURL, 0)
	prep("discarded", unknownURL, 2)
	prep("resolved", unknownURL, 2)

	// Messages of one key, committed in order, keep their order in Kafka.
	var ordered []string
	for i := range 20 {
		id := fmt.Sprintf("ordered-%02d", i)
		if _, err := c.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g", CheckbackURL: ledgerURL,
			Message: txmsg.Message{ID: id, Topic: topic + "-ordered", Key: []byte("one-key"), Value: []byte(id)}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Commit(ctx, id); err != nil {
			t.Fatal(err)
		}
		ordered = append(ordered, id)
	}

	waitStates(t, c, []string{"discarded", "resolved"}, halfmsg.StateDiscarded, 20*time.Second)
	if _, err := c.Resolve(ctx, "resolved", true, "operator checked"); err != nil {
		t.Fatal(err)
	}
	delivered := []string{"committed", "checked-commit", "resolved"}
	waitStates(t, c, delivered, halfmsg.StateDelivered, 20*time.Second)
	waitStates(t, c, []string{"rolled-back", "checked-rollback"}, halfmsg.StateRolledBack, 20*time.Second)
	// A repeated commit after delivery is still idempotent.
	if st, err := c.Commit(ctx, "committed"); err != nil || st != halfmsg.StateDelivered {
		t.Fatalf("commit after delivery: %v, %v", st, err)
	}

	waitStates(t, c, ordered, halfmsg.StateDelivered, 20*time.Second)
	recs, err := testenv.Records(ctx, kafka.Addrs, topic+"-ordered")
	if err != nil {
		t.Fatal(err)
	}
	// Order is checked on first copies: on a loaded machine a round can give
	// up on a produce Kafka took after all (a lost acknowledgement), and
	// send its messages again after it.
	firsts := recs[:0:0]
	seen := map[string]bool{}
	for _, r := range recs {
		if !seen[string(r.Value)] {
			seen[string(r.Value)] = true
			firsts = append(firsts, r)
		}
	}
	if len(firsts) != len(ordered) {
		t.Fatalf("%d ordered messages, want %d", len(firsts), len(ordered))
	}
	for i, r := range firsts {
		if string(r.Value) != ordered[i] || r.Partition != recs[0].Partition {
			t.Fatalf("message %d: %s on partition %d, want %s on %d", i, r.Value, r.Partition, ordered[i], recs[0].Partition)
		}
	}

	got := recordsByID(t, kafka.Addrs, topic)
	if len(got) != len(delivered) {
		t.Fatalf("Kafka has records of %d ids, want %d: %v", len(got), len(delivered), keys(got))
	}
	for _, id := range delivered {
		recs := got[id]
		if len(recs) == 0 {
			t.Fatalf("%s: not in Kafka", id)
		}
		r := recs[0]
		if testenv.HeaderValue(r, txmsg.HeaderSource) != txmsg.SourceHalf || string(r.Key) != "key-"+id ||
			string(r.Value) != "value-"+id || testenv.HeaderValue(r, "trace") != "t-"+id {
			t.Fatalf("%s: record %+v", id, r)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestBrokerServerTwoInstancesOneKilled(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	kafka := testenv.NewKafka(t, 4)
	ctx := context.Background()
	if _, err := db.DB.ExecContext(ctx, `CREATE TABLE biz (id VARCHAR(64) PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	cfg := testServerConfig(kafka.Addrs)
	a := startServer(t, db.DB, cfg)
	b := startServer(t, db.DB, cfg)
	ledger, err := checkback.LedgerChecker(db.DB)
	if err != nil {
		t.Fatal(err)
	}
	probe := newProbe()
	url := producerServer(t, a.Store(), "g", checkback.CheckerFunc(func(ctx context.Context, req checkback.Request) (checkback.Answer, error) {
		probe.enter(req.ID)
		defer probe.leave(req.ID)
		return ledger.Check(ctx, req)
	}))
	if err := a.client.SetGroup(ctx, "g", url); err != nil {
		t.Fatal(err)
	}
	const topic = "half-ha"
	var committed, rolledBack []string
	ledgerOnly := 0 // committed without a business row
	errFail := errors.New("business rule says no")
	send := func(i int, c *halfmsg.Client) {
		t.Helper()
		id := fmt.Sprintf("m-%03d", i)
		msg := txmsg.Message{ID: id, Topic: topic, Key: []byte(fmt.Sprintf("k%d", i%7)), Value: []byte(id)}
		p, err := halfmsg.NewProducer(c, "g", db.DB, halfmsg.WithProducerCheckTimeout(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		insert := func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO biz (id) VALUES (?)`, id)
			return err
		}
		// On a loaded machine the first check-back, 300ms after prepare, may
		// come before the local transaction wrote its ledger row: it answers
		// rollback, and the late transaction is refused, as it must be.
		lateTx := func(err error) bool { return errors.Is(err, checkback.ErrAlreadyDecided) }
		switch i % 4 {
		case 0: // the local transaction fails
			err := p.SendInTransaction(ctx, msg, func(ctx context.Context, tx *sql.Tx) error {
				if err := insert(ctx, tx); err != nil {
					return err
				}
				return errFail
			})
			if !errors.Is(err, errFail) && !lateTx(err) {
				t.Fatalf("%s: %v, want the business error", id, err)
			}
			rolledBack = append(rolledBack, id)
		case 1: // the producer dies after its local commit
			if _, err := c.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g", Message: msg, CheckTimeout: 300 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			switch err := recordInTx(ctx, db.DB, ledger, id, true); {
			case err == nil:
				committed = append(committed, id)
				ledgerOnly++
			case lateTx(err):
				rolledBack = append(rolledBack, id)
			default:
				t.Fatal(err)
			}
		case 2: // the producer dies before its local transaction
			if _, err := c.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g", Message: msg, CheckTimeout: 300 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			rolledBack = append(rolledBack, id)
		default:
			switch err := p.SendInTransaction(ctx, msg, insert); {
			case err == nil:
				committed = append(committed, id)
			case lateTx(err):
				rolledBack = append(rolledBack, id)
			default:
				t.Fatalf("%s: %v", id, err)
			}
		}
	}
	for i := range 40 {
		c := a.client
		if i%2 == 1 {
			c = b.client
		}
		send(i, c)
	}
	// Let a few check-backs start, then kill instance a.
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, _, calls := probe.snapshot(); len(calls) < 4 {
			return fmt.Errorf("%d messages checked so far", len(calls))
		}
		return nil
	})
	if err := a.stop(t); err != nil {
		t.Fatalf("killed broker: %v", err)
	}
	for i := 40; i < 80; i++ {
		send(i, b.client)
	}
	waitStates(t, b.client, committed, halfmsg.StateDelivered, 30*time.Second)
	waitStates(t, b.client, rolledBack, halfmsg.StateRolledBack, 30*time.Second)

	// At least once: on a loaded machine a round can give up on a produce
	// Kafka took after all (a lost acknowledgement), and the message is
	// sent again. Duplicates are the inbox's business; losses are not.
	got := recordsByID(t, kafka.Addrs, topic)
	for _, id := range committed {
		if n := len(got[id]); n == 0 {
			t.Fatalf("%s: not in Kafka", id)
		}
	}
	if len(got) != len(committed) {
		t.Fatalf("Kafka has %d ids, want the %d committed", len(got), len(committed))
	}
	if overlaps, _, _ := probe.snapshot(); overlaps != 0 {
		t.Fatalf("%d check-backs overlapped another of the same message", overlaps)
	}
	var n int
	if err := db.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM biz`).Scan(&n); err != nil || n != len(committed)-ledgerOnly {
		t.Fatalf("biz rows %d (%v), want %d", n, err, len(committed)-ledgerOnly)
	}
}

// A commit wakes the relay's worker for the message's shard: delivery does
// not wait for an idle shard's next poll, here up to 10s apart.
func TestBrokerServerCommitWakesItsShard(t *testing.T) {
	t.Parallel()
	db := testenv.NewDB(t)
	kafka := testenv.NewKafka(t, 3)
	cfg := testServerConfig(kafka.Addrs)
	cfg.CheckTimeout = time.Hour
	cfg.Relay.PollMax = 10 * time.Second
	srv := startServer(t, db.DB, cfg)
	ctx := context.Background()
	// Let every shard go idle, its poll interval grown to seconds.
	time.Sleep(4 * time.Second)
	for i := range 4 {
		id := fmt.Sprintf("wake-%d", i)
		if _, err := srv.client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g",
			Message: txmsg.Message{ID: id, Topic: "wake", Key: []byte(id), Value: []byte("v")}}); err != nil {
			t.Fatal(err)
		}
		committed := time.Now()
		if _, err := srv.client.Commit(ctx, id); err != nil {
			t.Fatal(err)
		}
		var written time.Time
		testenv.Eventually(t, 10*time.Second, func() error {
			recs := recordsByID(t, kafka.Addrs, "wake")[id]
			if len(recs) == 0 {
				return fmt.Errorf("%s not in Kafka yet", id)
			}
			written = recs[0].Time
			return nil
		})
		// The record's timestamp is when the relay wrote it: reading it
		// back, slow on a loaded machine, is not counted.
		if took := written.Sub(committed); took > time.Second {
			t.Errorf("%s reached Kafka %v after its commit, want well under the idle poll interval", id, took)
		}
	}
}

// Run returns only after the group-commit batches of calls already made
// have ended, even one whose caller the shutdown cut off, so that the
// caller may close the pool next.
func TestBrokerRunWaitsForBatchesInFlight(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	cfg := testServerConfig(k.Addrs)
	cfg.ShutdownTimeout = 200 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(d.DB, cfg, WithLogger(testLogger(t)), WithListener(ln))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- s.Run(ctx) }()
	client, err := halfmsg.NewClient("http://"+ln.Addr().String(), halfmsg.WithToken(testOperatorToken))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Prepare(ctx, halfmsg.PrepareRequest{ProducerGroup: "g",
		Message: txmsg.Message{ID: "m0", Topic: "t", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	tx := holdRow(t, d.DB, "m0")
	go func() { _, _ = client.Commit(ctx, "m0") }()
	waitBlocked(t, d, &s.store.moves)
	cancel()
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while a batch still ran", err)
	case <-time.After(time.Second):
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-stopped:
		// The API's shutdown may have timed out on the request the batch
		// held; what matters is that Run waited for the batch.
		t.Logf("Run returned: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of the batch's end")
	}
	// A call made after that fails, having done nothing, and starts no batch.
	if _, err := s.store.Commit(context.Background(), "m0"); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("Commit after Run returned: %v, want an error saying the broker is shutting down", err)
	}
}
