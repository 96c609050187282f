package consumer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/txmsg/txmsg/internal/testenv"
)

// TestConsumerDeadLetterTopicOption: WithDeadLetterTopic sends the dead
// letters of every subscribed topic to the one topic named, with their
// origin in the headers; a name Kafka would refuse is refused by New.
func TestConsumerDeadLetterTopicOption(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	if _, err := New(k.Addrs, "g", []string{"t1"}, WithDeadLetterTopic("bad topic")); err == nil {
		t.Fatal("New accepted a dead-letter topic with a space")
	}
	const group, dlq = "g", "all-dead"
	produce(t, k.Addrs, record("t1", "k", "id-1", "1"), record("t2", "k", "id-2", "2"))
	c, err := New(k.Addrs, group, []string{"t1", "t2"}, fastGroup(), WithDeadLetterTopic(dlq))
	if err != nil {
		t.Fatal(err)
	}
	start(t, c, HandlerFunc(func(context.Context, Message) error {
		return Permanent(errors.New("refused"))
	}))
	var recs []kafka.Message
	testenv.Eventually(t, 30*time.Second, func() error {
		var err error
		recs, err = testenv.Records(context.Background(), k.Addrs, dlq)
		if err != nil {
			return err
		}
		if len(recs) != 2 {
			return fmt.Errorf("%d dead letters in %s, want 2", len(recs), dlq)
		}
		return nil
	})
	from := map[string]string{}
	for _, r := range recs {
		from[testenv.HeaderValue(r, "txmsg-id")] = testenv.HeaderValue(r, HeaderDLQTopic)
	}
	if from["id-1"] != "t1" || from["id-2"] != "t2" {
		t.Fatalf("dead letters by id: origin topics %v, want id-1 from t1 and id-2 from t2", from)
	}
}

// TestConsumerDeadLetterTooLargeForItsTopic: a message near its topic's
// limit whose retry copy does not fit the retry tier is dead-lettered, and
// whose dead-letter copy does not fit either is dead-lettered without its
// value, marked and pointing at the original, rather than stalling its
// partition; a small message passes through the tier whole.
func TestConsumerDeadLetterTooLargeForItsTopic(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1, kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4096"}))
	const topic, group = "sized", "g"
	big := record(topic, "k", "big", strings.Repeat("v", 3950))
	produce(t, k.Addrs, big, record(topic, "k", "small", "s"))
	c, err := New(k.Addrs, group, []string{topic}, fastGroup(), WithMaxAttempts(1),
		WithBackoff(time.Millisecond, 10*time.Millisecond), WithRetryTiers(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, c, HandlerFunc(func(context.Context, Message) error { return errors.New("cannot apply") }))
	recs := testenv.WaitRecords(t, k.Addrs, deadLetterTopic("", topic, group), 2, 30*time.Second)
	byID := map[string]kafka.Message{}
	for _, rec := range recs {
		byID[testenv.HeaderValue(rec, "txmsg-id")] = rec
	}
	b, s := byID["big"], byID["small"]
	if len(b.Value) != 0 || testenv.HeaderValue(b, HeaderDLQOmitted) != "3950" ||
		testenv.HeaderValue(b, HeaderDLQTopic) != topic || testenv.HeaderValue(b, HeaderDLQOffset) != "0" ||
		!strings.Contains(testenv.HeaderValue(b, HeaderDLQError), "cannot apply") {
		t.Fatalf("big dead letter: value %d bytes, headers %v", len(b.Value), b.Headers)
	}
	if string(s.Value) != "s" || testenv.HeaderValue(s, HeaderDLQOmitted) != "" {
		t.Fatalf("small dead letter: value %q, headers %v", s.Value, s.Headers)
	}
	select {
	case err := <-r.done:
		t.Fatalf("Run ended: %v", err)
	default:
	}
}

// TestConsumerDeadLettersThatFitAloneArriveWhole: Kafka judges size by the
// request, and dead letters written at once by several workers share one;
// each refused with the others is sent again alone and arrives whole, not
// stripped of its value.
func TestConsumerDeadLettersThatFitAloneArriveWhole(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1, kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4096"}))
	const topic, group, n = "shared", "g", 8
	value := strings.Repeat("v", 1400)
	for i := range n {
		produce(t, k.Addrs, record(topic, fmt.Sprint("k", i), fmt.Sprint("id-", i), value))
	}
	c, err := New(k.Addrs, group, []string{topic}, fastGroup(), WithConcurrency(n), WithMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	// The handlers fail together, so their dead letters are written at once.
	arrived := make(chan struct{}, n)
	start(t, c, HandlerFunc(func(ctx context.Context, m Message) error {
		arrived <- struct{}{}
		wait, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for len(arrived) < n && wait.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		return errors.New("cannot apply")
	}))
	recs := testenv.WaitRecords(t, k.Addrs, deadLetterTopic("", topic, group), n, 30*time.Second)
	for _, rec := range recs {
		if string(rec.Value) != value || testenv.HeaderValue(rec, HeaderDLQOmitted) != "" {
			t.Errorf("dead letter %s: value %d bytes, omitted %q; want it whole",
				testenv.HeaderValue(rec, "txmsg-id"), len(rec.Value), testenv.HeaderValue(rec, HeaderDLQOmitted))
		}
	}
}
