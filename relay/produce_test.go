package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// A round's rows for several partitions go to Kafka in one produce request
// (one per leader), not one request per partition: at a trickle the
// requests per message, and the thread wake-ups each costs on both sides,
// are what the relay's CPU goes on.
func TestRelayRoundSendsOneProduceRequestPerLeader(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 6)
	var mu sync.Mutex
	var requests []int
	k.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		n := 0
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			n += len(tp.Partitions)
		}
		mu.Lock()
		requests = append(requests, n)
		mu.Unlock()
		return nil, nil, false
	})
	pub, err := outbox.NewPublisher(outbox.WithShards(1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tx, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	const keys = 24
	var msgs []txmsg.Message
	for i := range keys {
		msgs = append(msgs, msg("spread", fmt.Sprint("key-", i), 1))
	}
	if err := pub.Publish(ctx, tx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(k.Addrs)
	cfg.Shards = 1
	startEngine(t, d.DB, cfg)
	got := waitDelivered(t, k.Addrs, "spread", keys, 30*time.Second)
	partitions := map[int]bool{}
	for _, m := range got {
		partitions[m.Partition] = true
	}
	mu.Lock()
	defer mu.Unlock()
	if len(partitions) < 3 || len(requests) != 1 || requests[0] != len(partitions) {
		t.Fatalf("%d keys over %d partitions went in produce requests of %v partitions, want one request of all",
			keys, len(partitions), requests)
	}
}

// The largest message Publish accepts by default reaches Kafka, whose
// default max.message.bytes bounds the whole record: a message Validate
// lets through is never refused as too large and dead-lettered.
func TestRelayDeliversTheLargestMessagePublishAccepts(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	startEngine(t, d.DB, oneShardConfig(k.Addrs))
	m := txmsg.Message{Topic: "big", Key: []byte("k"), Headers: []txmsg.Header{{Key: "trace", Value: []byte("t")}}}
	m.Value = make([]byte, txmsg.DefaultMaxValueBytes-txmsg.RecordBytes(m.Key, nil, m.ID, m.Headers))
	publishOneShard(t, d.DB, m)
	got := waitDelivered(t, k.Addrs, "big", 1, 20*time.Second)
	if len(got[0].Value) != len(m.Value) {
		t.Fatalf("delivered a value of %d bytes, want %d", len(got[0].Value), len(m.Value))
	}
	big := m
	big.Value = append(big.Value, 0)
	if err := publishTx(context.Background(), d.DB, true, big); !errors.Is(err, txmsg.ErrInvalidMessage) {
		t.Fatalf("Publish one byte more: %v, want ErrInvalidMessage", err)
	}
}
