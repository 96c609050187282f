package kafkax

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/txmsg/txmsg/internal/testenv"
)

// Keys land where kafka-go's Murmur2Balancer (and Java's producer) put them.
func TestKafkaxProducerPartitionMatchesMurmur2Balancer(t *testing.T) {
	p, err := NewProducer([]string{"127.0.0.1:9092"}, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, n := range []int{1, 3, 12} {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for _, key := range []string{"", "a", "order-42", "ключ", strings.Repeat("x", 101)} {
			want := (&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: []byte(key)}, parts...)
			if got := p.Partition([]byte(key), n); got != want {
				t.Errorf("Partition(%q, %d) = %d, Murmur2Balancer says %d", key, n, got, want)
			}
		}
	}
}

// Produce writes one request to the partition asked for, headers included;
// Topics creates missing topics where the cluster allows it and names the
// error where it does not.
func TestKafkaxProducerProducesToItsPartition(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 3)
	p, err := NewProducer(k.Addrs, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	info, err := p.Topics(ctx, []string{"made"})
	if err != nil || info["made"].Partitions != 3 || info["made"].Err != nil {
		t.Fatalf("Topics = %+v, %v; want 3 partitions of the auto-created topic", info, err)
	}
	recs := []kafka.Record{
		{Key: kafka.NewBytes([]byte("k")), Value: kafka.NewBytes([]byte("v1")), Headers: []kafka.Header{{Key: "h", Value: []byte("x")}}},
		{Key: kafka.NewBytes([]byte("k")), Value: kafka.NewBytes([]byte("v2"))},
	}
	if err := p.Produce(ctx, "made", 2, recs); err != nil {
		t.Fatal(err)
	}
	got, err := testenv.Records(ctx, k.Addrs, "made")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Partition != 2 || string(got[0].Value) != "v1" || string(got[1].Value) != "v2" ||
		testenv.HeaderValue(got[0], "h") != "x" {
		t.Fatalf("records %+v, want v1 (with header h) and v2 in partition 2", got)
	}

	strict, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "only"), kfake.Ports(0))
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	sp, err := NewProducer(strict.ListenAddrs(), WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	info, err = sp.Topics(ctx, []string{"only", "missing"})
	if err != nil || info["only"].Partitions != 1 || !errors.Is(info["missing"].Err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("Topics = %+v, %v; want only with 1 partition and missing unknown", info, err)
	}
}

// A request lives until its deadline, not until its context is cancelled:
// kafka-go writes a request it has taken even after a cancel, so Produce
// must not return while the request could still be sent.
func TestKafkaxProducerRequestEndsByItsDeadline(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	k.Cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		k.Cluster.SleepControl(func() { <-done })
		return nil, errors.New("never answered"), true
	})
	p, err := NewProducer(k.Addrs, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Topics(context.Background(), []string{"slow"}); err != nil {
		t.Fatal(err)
	}
	const deadline = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	err = p.Produce(ctx, "slow", 0, []kafka.Record{{Value: kafka.NewBytes([]byte("v"))}})
	took := time.Since(start)
	if err == nil {
		t.Fatal("Produce succeeded against a broker that never answers")
	}
	if took < deadline-50*time.Millisecond {
		t.Fatalf("Produce returned after %v, before its deadline %v: the request may still be written", took, deadline)
	}
}
