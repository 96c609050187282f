package consumer

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/testenv"
)

// TestConsumerRetryTiers: with retry topics, a failing message moves
// through the tiers without holding up its key, keeps its topic and id,
// and after the last tier lands in the dead-letter topic with its origin.
func TestConsumerRetryTiers(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	const topic, group = "t", "g"
	var msgs []kafka.Message
	for n := 0; n < 4; n++ {
		msgs = append(msgs, record(topic, "k", "", strconv.Itoa(n)))
	}
	msgs = append(msgs, record(topic, "doomed", "doomed-id", "9"))
	produce(t, k.Addrs, msgs...)

	type call struct {
		n       int
		attempt int
		id      string
		topic   string
		at      time.Time
	}
	var mu sync.Mutex
	var calls []call
	m := &recorder{}
	c, err := New(k.Addrs, group, []string{topic}, fastGroup(), WithMaxAttempts(1),
		WithRetryTiers(300*time.Millisecond, 300*time.Millisecond), WithHooks(m))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, HandlerFunc(func(_ context.Context, msg Message) error {
		n, _ := strconv.Atoi(string(msg.Value))
		mu.Lock()
		calls = append(calls, call{n, msg.Attempt, msg.ID, msg.Topic, time.Now()})
		mu.Unlock()
		if n == 9 || (n == 1 && msg.Attempt < 3) {
			return errBoom
		}
		return nil
	}))
	var recs []kafka.Message
	testenv.Eventually(t, 30*time.Second, func() error {
		if m.get(&m.consumed) != 4 {
			return fmt.Errorf("%d consumed", m.get(&m.consumed))
		}
		var err error
		recs, err = testenv.Records(context.Background(), k.Addrs, topic+"."+group+".dlq")
		if err != nil {
			return err
		}
		if len(recs) != 1 {
			return fmt.Errorf("%d dead letters", len(recs))
		}
		return nil
	})
	r.stop(t)
	mu.Lock()
	defer mu.Unlock()
	var ones []call
	var lastOther time.Time
	for _, cl := range calls {
		if cl.topic != topic {
			t.Errorf("handler saw topic %q, want %q", cl.topic, topic)
		}
		switch cl.n {
		case 1:
			ones = append(ones, cl)
		case 2, 3:
			lastOther = cl.at
		}
	}
	if len(ones) != 3 {
		t.Fatalf("message 1 handled %d times, want 3: %+v", len(ones), ones)
	}
	for i, cl := range ones {
		if cl.attempt != i+1 || cl.id != "t/0/1" {
			t.Errorf("message 1 call %d: attempt %d id %q, want %d and t/0/1", i, cl.attempt, cl.id, i+1)
		}
		if i > 0 && cl.at.Sub(ones[i-1].at) < 250*time.Millisecond {
			t.Errorf("tier %d ran %v after the previous attempt, before its delay", i, cl.at.Sub(ones[i-1].at))
		}
	}
	if !lastOther.Before(ones[1].at) {
		t.Error("later messages of the key waited for the retried one; retry tiers should not block the key")
	}
	dl := recs[0]
	for h, want := range map[string]string{HeaderDLQTopic: topic, HeaderDLQPartition: "0", HeaderDLQOffset: "4",
		HeaderDLQAttempts: "3", "txmsg-id": "doomed-id"} {
		if got := testenv.HeaderValue(dl, h); got != want {
			t.Errorf("dead letter header %s = %q, want %q", h, got, want)
		}
	}
	if v := testenv.HeaderValue(dl, HeaderRetryDue); v != "" {
		t.Errorf("dead letter kept retry header %s=%s", HeaderRetryDue, v)
	}
}
