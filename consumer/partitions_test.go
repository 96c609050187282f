package consumer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/txmsg/txmsg/internal/testenv"
)

// Partitions added to a topic while the group runs are consumed: the group
// rebalances once it sees them, as Kafka's Java consumer does, instead of
// leaving their messages until its membership changes.
func TestConsumerReadsPartitionsAddedWhileRunning(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 2)
	const topic = "grows"
	produce(t, k.Addrs, record(topic, "k", "id-0", "0"))
	var mu sync.Mutex
	seen := map[int]bool{}
	c, err := New(k.Addrs, "g", []string{topic}, fastGroup())
	if err != nil {
		t.Fatal(err)
	}
	start(t, c, HandlerFunc(func(_ context.Context, m Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen[m.Partition] = true
		return nil
	}))
	testenv.Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return fmt.Errorf("nothing consumed yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(k.Addrs...)}
	res, err := client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Addr:   kafka.TCP(k.Addrs...),
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 4}},
	})
	if err != nil || res.Errors[topic] != nil {
		t.Fatalf("create partitions: %v %v", err, res)
	}
	w := &kafka.Writer{Addr: kafka.TCP(k.Addrs...), Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return 3 })}
	defer w.Close()
	testenv.Eventually(t, 20*time.Second, func() error {
		return w.WriteMessages(ctx, record(topic, "k3", "id-3", "3"))
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !seen[3] {
			return fmt.Errorf("partitions consumed: %v; want partition 3, added while running", seen)
		}
		return nil
	})
}

// A group started before its topic exists (on a cluster that does not
// create topics on demand) waits for it, then reads it: it joins once,
// neither storming the coordinator with joins nor staying assigned nothing.
func TestConsumerWaitsForItsTopicToExist(t *testing.T) {
	t.Parallel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(2), kfake.Ports(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	var joins atomic.Int32
	cluster.ControlKey(int16(kmsg.JoinGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		joins.Add(1)
		cluster.KeepControl()
		return nil, nil, false
	})
	addrs := cluster.ListenAddrs()
	var got atomic.Int32
	c, err := New(addrs, "g", []string{"later"}, fastGroup())
	if err != nil {
		t.Fatal(err)
	}
	start(t, c, HandlerFunc(func(context.Context, Message) error { got.Add(1); return nil }))
	time.Sleep(3 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(addrs...)}
	res, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "later", NumPartitions: 2, ReplicationFactor: 1}}})
	if err != nil || res.Errors["later"] != nil {
		t.Fatalf("create topic: %v %v", err, res)
	}
	produce(t, addrs, record("later", "k", "id", "1"))
	testenv.Eventually(t, 20*time.Second, func() error {
		if got.Load() == 0 {
			return fmt.Errorf("nothing consumed of a topic created after Run started")
		}
		return nil
	})
	if n := joins.Load(); n > 3 {
		t.Fatalf("%d group joins, want one or two: the group must wait for its topic, not rejoin", n)
	}
}

// On a cluster that creates topics on demand, a group started before its
// topic exists asks for it to be created, as a consumer's join does, and
// joins at once instead of waiting for a producer.
func TestConsumerAutoCreatesItsTopicWhereTheClusterDoes(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 2)
	var joins atomic.Int32
	k.Cluster.ControlKey(int16(kmsg.JoinGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
		joins.Add(1)
		k.Cluster.KeepControl()
		return nil, nil, false
	})
	c, err := New(k.Addrs, "g", []string{"created-on-demand"}, fastGroup())
	if err != nil {
		t.Fatal(err)
	}
	start(t, c, HandlerFunc(func(context.Context, Message) error { return nil }))
	testenv.Eventually(t, 10*time.Second, func() error {
		if joins.Load() == 0 {
			return fmt.Errorf("the group has not joined: it waits for a topic the cluster would create")
		}
		return nil
	})
}
