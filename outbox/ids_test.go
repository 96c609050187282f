package outbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// Ids compare byte for byte, and an id is unique per topic: "Order-1" and
// "order-1" are two messages, and one id may go to several topics.
func TestOutboxIDsAreCaseSensitiveAndPerTopic(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	msgs := []txmsg.Message{
		{ID: "Order-1", Topic: "orders", Value: []byte("a")},
		{ID: "order-1", Topic: "orders", Value: []byte("b")},
	}
	for i := range 20 {
		msgs = append(msgs, txmsg.Message{ID: "fan", Topic: fmt.Sprintf("topic-%d", i), Value: []byte("c")})
	}
	if err := outbox.Publish(ctx, d.DB, msgs...); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := d.DB.QueryRow("SELECT COUNT(*) FROM txmsg_outbox").Scan(&n); err != nil || n != len(msgs) {
		t.Fatalf("%d rows (%v), want %d", n, err, len(msgs))
	}
	for _, m := range []txmsg.Message{msgs[1], msgs[7]} {
		if err := outbox.Publish(ctx, d.DB, m); err == nil {
			t.Errorf("publishing %s to %s twice succeeded", m.ID, m.Topic)
		}
	}
}

// Transactions publishing one id each to 20 topics, in different topic
// orders, run concurrently without duplicate-key or deadlock errors.
func TestOutboxConcurrentFanOuts(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	const workers, perWorker, topics = 8, 10, 20
	errs := make(chan error, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range perWorker {
				id := fmt.Sprintf("evt-%d-%d", w, i)
				var msgs []txmsg.Message
				for _, n := range rng.Perm(topics) {
					msgs = append(msgs, txmsg.Message{ID: id, Topic: fmt.Sprintf("topic-%d", n),
						Key: []byte(fmt.Sprintf("k%d", i%3)), Value: []byte(id)})
				}
				tx, err := d.DB.BeginTx(ctx, nil)
				if err != nil {
					errs <- err
					continue
				}
				if err := outbox.Publish(ctx, tx, msgs...); err != nil {
					_ = tx.Rollback()
					errs <- fmt.Errorf("%s: %w", id, err)
					continue
				}
				if err := tx.Commit(); err != nil {
					errs <- fmt.Errorf("%s: commit: %w", id, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n int
	if err := d.DB.QueryRow("SELECT COUNT(*) FROM txmsg_outbox").Scan(&n); err != nil || n != workers*perWorker*topics {
		t.Fatalf("%d rows (%v), want %d", n, err, workers*perWorker*topics)
	}
}
