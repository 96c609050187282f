package consumer

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/txmsg/txmsg/internal/testenv"
)

// A database outage is not the message's fault: the messages it meets are
// retried without spending attempts, and handled once the database is back,
// none dead-lettered (with two attempts they would all have been).
func TestConsumerDatabaseOutageSpendsNoAttempt(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	d := testenv.NewDB(t)
	createEffectsTable(t, d.DB)
	proxy, dsn := d.Proxy(t)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	const topic = "outage"
	m := &recorder{}
	c, err := New(k.Addrs, "g", []string{topic}, fastGroup(), WithInbox(db), WithMaxAttempts(2),
		WithBackoff(5*time.Millisecond, 50*time.Millisecond), WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, TxHandlerFunc(insertEffect))
	produce(t, k.Addrs, record(topic, "k", "id-0", "1"))
	testenv.Eventually(t, 20*time.Second, func() error { return checkEffects(d.DB, 1) })
	proxy.Down()
	produce(t, k.Addrs, record(topic, "k", "id-1", "2"), record(topic, "k", "id-2", "3"))
	// Long enough for many more failures than attempts.
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := m.get(&m.failed); n < 5 {
			return context.DeadlineExceeded
		}
		return nil
	})
	proxy.Up()
	testenv.Eventually(t, 30*time.Second, func() error { return checkEffects(d.DB, 3) })
	r.stop(t)
	if n := m.get(&m.dead); n != 0 {
		t.Fatalf("%d messages dead-lettered over a database outage, want none", n)
	}
}
