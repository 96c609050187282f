package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

// One message with a caller-chosen id, published to 20 topics in one
// transaction, arrives in every topic.
func TestRelayOneIDTwentyTopicsAllArrive(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	ctx := context.Background()
	startEngine(t, d.DB, testConfig(k.Addrs))
	var msgs []txmsg.Message
	for i := range 20 {
		msgs = append(msgs, txmsg.Message{ID: "order-17-placed", Topic: fmt.Sprintf("fan-%02d", i),
			Key: []byte("order-17"), Value: []byte(fmt.Sprintf("copy %d", i))})
	}
	if err := publishTx(ctx, d.DB, true, msgs...); err != nil {
		t.Fatalf("publish one id to 20 topics: %v", err)
	}
	for i, m := range msgs {
		got := waitDelivered(t, k.Addrs, m.Topic, 1, 20*time.Second)
		if len(got) != 1 || testenv.HeaderValue(got[0], txmsg.HeaderID) != "order-17-placed" ||
			string(got[0].Value) != fmt.Sprintf("copy %d", i) {
			t.Fatalf("topic %s holds %v", m.Topic, got)
		}
	}
}

// Concurrent transactions, each publishing one id to the same 20 topics,
// commit without duplicate-key or deadlock errors while the relay delivers
// and deletes rows, and every copy arrives.
func TestRelayConcurrentFanOutsAllArrive(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	ctx := context.Background()
	startEngine(t, d.DB, testConfig(k.Addrs))
	const workers, perWorker, topics = 8, 5, 20
	errs := make(chan error, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				id := fmt.Sprintf("evt-%d-%d", w, i)
				var msgs []txmsg.Message
				for n := range topics {
					// Workers walk the topics in different orders.
					topic := fmt.Sprintf("cfan-%02d", (n+w*3)%topics)
					msgs = append(msgs, txmsg.Message{ID: id, Topic: topic, Key: []byte(fmt.Sprintf("k%d", i%2)), Value: []byte(id)})
				}
				if err := publishTx(ctx, d.DB, true, msgs...); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for n := range topics {
		topic := fmt.Sprintf("cfan-%02d", n)
		got := waitDelivered(t, k.Addrs, topic, workers*perWorker, 30*time.Second)
		if len(got) != workers*perWorker {
			t.Fatalf("topic %s: %d distinct ids, want %d", topic, len(got), workers*perWorker)
		}
	}
}

// halfStub stands in for the broker's source in dead-letter tests.
type halfStub struct{ *OutboxSource }

func (halfStub) Name() string { return txmsg.SourceHalf }

func (halfStub) Remove(context.Context, Execer, []Row) error { return nil }

// Dead letters of one id from two sources and two topics, and a second
// death of one of them (the id published again after the first died), keep
// each other; retrying requeues every copy whose topic and id are not
// pending in the outbox, and says which stayed dead.
func TestRelayDeadLettersOfOneIDKeepEachOther(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	out := NewOutboxSource(false)
	row := func(topic string) Row {
		return Row{ID: "evt-1", Topic: topic, Key: []byte("k"), Value: []byte(topic), CreatedAt: time.Now().UTC()}
	}
	for _, c := range []struct {
		src   Source
		topic string
	}{{out, "orders"}, {halfStub{out}, "orders"}, {out, "billing"}, {out, "orders"}} {
		if err := moveToDead(ctx, d.DB, c.src, []dying{{row: row(c.topic), reason: "refused by " + c.src.Name()}}, func(*sql.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	dead, err := ListDead(ctx, d.DB, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, dl := range dead {
		got = append(got, dl.Topic+"/"+dl.Source+"/"+dl.LastError)
	}
	sort.Strings(got)
	if strings.Join(got, " ") != "billing/outbox/refused by outbox orders/half/refused by half orders/outbox/refused by outbox orders/outbox/refused by outbox" {
		t.Fatalf("dead letters %v", got)
	}
	// The orders copies cannot be pending at once: two stay dead.
	if err := RetryDead(ctx, d.DB, "evt-1"); !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("RetryDead = %v, want ErrConflict for the copy left", err)
	}
	if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox WHERE id = 'evt-1'"); n != 2 {
		t.Fatalf("%d outbox rows of evt-1, want 2 (orders and billing)", n)
	}
	if n, err := RetryAllDead(ctx, d.DB); n != 0 || !errors.Is(err, txmsg.ErrConflict) {
		t.Fatalf("RetryAllDead while orders is pending = %d, %v; want 0 and ErrConflict", n, err)
	}
	// Each time the pending copy is delivered, the next one goes.
	for left := 1; left >= 0; left-- {
		if _, err := d.DB.ExecContext(ctx, "DELETE FROM txmsg_outbox WHERE topic = 'orders'"); err != nil {
			t.Fatal(err)
		}
		n, err := RetryAllDead(ctx, d.DB)
		if n != 1 || (left > 0) != errors.Is(err, txmsg.ErrConflict) {
			t.Fatalf("RetryAllDead with %d more to go = %d, %v; want 1", left, n, err)
		}
	}
	if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_dead_letters"); n != 0 {
		t.Fatalf("%d dead letters left", n)
	}
}
