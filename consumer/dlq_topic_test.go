package consumer

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

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
