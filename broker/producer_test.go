package broker

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/broker/halfmsg"
)

// failCommits is a transport whose commit calls fail before reaching the
// broker, as if the producer crashed or the network broke.
type failCommits struct{ next http.RoundTripper }

func (f failCommits) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/commit") {
		return nil, errors.New("network down")
	}
	return f.next.RoundTrip(r)
}

func TestBrokerProducerSurfacesErrorsAndCheckbackRecovers(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	if _, err := env.db.DB.ExecContext(ctx, `CREATE TABLE biz (id VARCHAR(64) PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	insert := func(id string) func(context.Context, *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO biz (id) VALUES (?)`, id)
			return err
		}
	}
	broken, err := halfmsg.NewClient(env.url, halfmsg.WithToken(testOperatorToken),
		halfmsg.WithHTTPClient(&http.Client{Transport: failCommits{http.DefaultTransport}}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := halfmsg.NewProducer(broken, "shop", env.db.DB, halfmsg.WithProducerCheckTimeout(20*time.Millisecond),
		halfmsg.WithProducerSyncEnd())
	if err != nil {
		t.Fatal(err)
	}
	endErrs := make(chan *halfmsg.EndError, 1)
	async, err := halfmsg.NewProducer(broken, "shop", env.db.DB, halfmsg.WithProducerCheckTimeout(20*time.Millisecond),
		halfmsg.WithProducerOnEndError(func(e *halfmsg.EndError) { endErrs <- e }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = async.Close(context.Background()) })
	url := producerServer(t, env.store, "shop", p.Ledger())
	if err := env.client.SetGroup(ctx, "shop", url); err != nil {
		t.Fatal(err)
	}

	// The commit call fails after the local commit: the error is returned
	// (synchronous end) or reported to the hook (the default, asynchronous
	// end), and check-back delivers the message from the ledger row.
	err = p.SendInTransaction(ctx, txmsg.Message{ID: "lost-commit", Topic: "orders", Value: []byte("v")}, insert("lost-commit"))
	if err == nil || !strings.Contains(err.Error(), "network down") {
		t.Fatalf("failed commit call: %v, want it returned", err)
	}
	if err := async.SendInTransaction(ctx, txmsg.Message{ID: "lost-async", Topic: "orders", Value: []byte("v")}, insert("lost-async")); err != nil {
		t.Fatalf("asynchronous end: %v, want the failed commit call reported to the hook, not returned", err)
	}
	if err := async.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-endErrs:
		if e.ID != "lost-async" || !e.Commit || e.Attempts < 2 || !strings.Contains(e.Error(), "network down") {
			t.Fatalf("reported %+v (%v), want the commit of lost-async, retried, failing with network down", e, e)
		}
	default:
		t.Fatal("failed background commit call not reported")
	}
	scanner := testScanner(t, env.store, ScannerConfig{})
	waitState(t, env.store, scanner, "lost-commit", halfmsg.StateCommitted, 10*time.Second)
	waitState(t, env.store, scanner, "lost-async", halfmsg.StateCommitted, 10*time.Second)

	// An invalid message fails at prepare, over HTTP, with the sentinel;
	// nothing runs.
	ran := false
	err = p.SendInTransaction(ctx, txmsg.Message{Topic: "bad topic", Value: []byte("v")}, func(context.Context, *sql.Tx) error {
		ran = true
		return nil
	})
	if !errors.Is(err, txmsg.ErrInvalidMessage) || ran {
		t.Fatalf("invalid message: %v (ran=%v), want ErrInvalidMessage before the transaction", err, ran)
	}

	// A failing local transaction rolls the message back at once.
	good, err := halfmsg.NewProducer(env.client, "shop", env.db.DB)
	if err != nil {
		t.Fatal(err)
	}
	err = good.SendInTransaction(ctx, txmsg.Message{ID: "dup", Topic: "orders", Value: []byte("v")}, insert("lost-commit"))
	if err == nil {
		t.Fatal("duplicate business row: want the transaction's error")
	}
	if err := good.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := env.store.Get(ctx, "dup"); info.State != halfmsg.StateRolledBack {
		t.Fatalf("after a failed local transaction: %s, want rolled_back", info.State)
	}
	// A clean send commits.
	if err := good.SendInTransaction(ctx, txmsg.Message{ID: "ok", Topic: "orders", Value: []byte("v")}, insert("ok")); err != nil {
		t.Fatal(err)
	}
	if err := good.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := env.store.Get(ctx, "ok"); info.State != halfmsg.StateCommitted {
		t.Fatalf("clean send: %s, want committed", info.State)
	}
	if _, err := halfmsg.NewProducer(env.client, "", env.db.DB); err == nil {
		t.Fatal("empty group: want an error")
	}
}

// The producer's per-message options reach the broker with each message.
func TestBrokerProducerMessageOptions(t *testing.T) {
	t.Parallel()
	env := newAPIEnv(t)
	ctx := context.Background()
	const url = "http://shop.internal:8080/txmsg/checkback"
	if _, err := halfmsg.NewProducer(env.client, "shop", env.db.DB, halfmsg.WithProducerCheckbackURL("ftp://x")); err == nil {
		t.Fatal("NewProducer accepted an ftp check-back URL")
	}
	p, err := halfmsg.NewProducer(env.client, "shop", env.db.DB, halfmsg.WithProducerCheckbackURL(url),
		halfmsg.WithProducerMaxChecks(3), halfmsg.WithProducerCheckTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	msg := txmsg.Message{ID: "with-options", Topic: "orders", Value: []byte("v")}
	if err := p.SendInTransaction(ctx, msg, func(context.Context, *sql.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	info, err := env.store.Get(ctx, "with-options")
	if err != nil {
		t.Fatal(err)
	}
	if info.CheckbackURL != url || info.MaxChecks != 3 || info.CheckTimeout != time.Minute {
		t.Fatalf("message stored with check-back URL %q, max checks %d, check timeout %v; want %q, 3, 1m",
			info.CheckbackURL, info.MaxChecks, info.CheckTimeout, url)
	}
}
