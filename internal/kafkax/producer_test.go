package kafkax

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
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
	if err := produceOne(ctx, p, "made", 2, recs); err != nil {
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
	err = produceOne(ctx, p, "slow", 0, []kafka.Record{{Value: kafka.NewBytes([]byte("v"))}})
	took := time.Since(start)
	if err == nil {
		t.Fatal("Produce succeeded against a broker that never answers")
	}
	if took < deadline-50*time.Millisecond {
		t.Fatalf("Produce returned after %v, before its deadline %v: the request may still be written", took, deadline)
	}
}

// holdProduce makes k's broker hold the first produce request until release
// is called (in t.Cleanup at the latest), and report on held once it
// holds it. Every produce request's partitions, per topic, are added to
// parts in the order the requests came.
func holdProduce(t *testing.T, k *testenv.Kafka) (held chan struct{}, release func(), parts func() [][]int32) {
	held, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	var mu sync.Mutex
	var seen [][]int32
	first := true
	k.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		var ps []int32
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			for _, p := range tp.Partitions {
				ps = append(ps, p.Partition)
			}
		}
		mu.Lock()
		seen = append(seen, ps)
		hold := first
		first = false
		mu.Unlock()
		if hold {
			close(held)
			k.Cluster.SleepControl(func() { <-gate })
		}
		return nil, nil, false
	})
	return held, release, func() [][]int32 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// queued waits until the lane of p's only leader holds n calls.
func queued(t *testing.T, p *Producer, n int) {
	testenv.Eventually(t, 5*time.Second, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.lanes {
			if len(l.queue) == n {
				return nil
			}
		}
		return fmt.Errorf("want %d calls queued", n)
	})
}

// produceOne writes recs to one partition of topic with ProduceAll.
func produceOne(ctx context.Context, p *Producer, topic string, partition int, recs []kafka.Record) error {
	return p.ProduceAll(ctx, []Batch{{Topic: topic, Partition: partition, Records: recs}})[0]
}

func value(s string) []kafka.Record { return []kafka.Record{{Value: kafka.NewBytes([]byte(s))}} }

// topicProducer returns a Producer for k, closed when the test ends, that
// keeps at most inFlight requests under way per leader and knows topic's
// leaders.
func topicProducer(t *testing.T, k *testenv.Kafka, topic string, inFlight int) *Producer {
	t.Helper()
	p, err := NewProducer(k.Addrs, WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	p.inFlight = inFlight
	if _, err := p.Topics(context.Background(), []string{topic}); err != nil {
		t.Fatal(err)
	}
	return p
}

// valuesAt lists topic's records as value@partition, partition by partition.
func valuesAt(t *testing.T, k *testenv.Kafka, topic string) []string {
	t.Helper()
	recs, err := testenv.Records(context.Background(), k.Addrs, topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprintf("%s@%d", r.Value, r.Partition))
	}
	return out
}

// With one request in flight per leader, calls that arrive while it is
// under way share the next request, one per partition: a second call for a
// partition waits for the request after, so each partition's records land
// in the order the calls came.
func TestKafkaxProducerCallsShareARequestPerLeader(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 3)
	held, release, parts := holdProduce(t, k)
	p := topicProducer(t, k, "shared", 1)
	ctx := context.Background()
	errs := make(chan error, 4)
	go func() { errs <- produceOne(ctx, p, "shared", 0, value("a0")) }()
	<-held
	go func() { errs <- produceOne(ctx, p, "shared", 1, value("b1")) }()
	queued(t, p, 1)
	go func() { errs <- produceOne(ctx, p, "shared", 2, value("c2")) }()
	queued(t, p, 2)
	go func() { errs <- produceOne(ctx, p, "shared", 1, value("d1")) }()
	queued(t, p, 3)
	release()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got, want := parts(), [][]int32{{0}, {1, 2}, {1}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("requests carried partitions %v, want %v", got, want)
	}
	got := valuesAt(t, k, "shared")
	if want := []string{"a0@0", "b1@1", "d1@1", "c2@2"}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
}

// A shared request's answer is per partition: a partition the broker
// refuses fails its own call only.
func TestKafkaxProducerSharedRequestFailsPerPartition(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 2)
	held, release, parts := holdProduce(t, k)
	k.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Partitions: []int32{0}, Err: kerr.NotEnoughReplicas,
		Count: -1})
	p := topicProducer(t, k, "split", 1)
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- produceOne(ctx, p, "split", 1, value("first")) }()
	<-held
	errs := make([]chan error, 2)
	for part := range 2 {
		errs[part] = make(chan error, 1)
		go func() { errs[part] <- produceOne(ctx, p, "split", part, value(fmt.Sprint("p", part))) }()
		queued(t, p, part+1)
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-errs[0]; !errors.Is(err, kafka.NotEnoughReplicas) || !strings.Contains(err.Error(), "split/0") {
		t.Fatalf("call to the refused partition: %v, want NOT_ENOUGH_REPLICAS naming split/0", err)
	}
	if err := <-errs[1]; err != nil {
		t.Fatalf("call to the healthy partition: %v", err)
	}
	if got := parts(); len(got) != 2 || len(got[1]) != 2 {
		t.Fatalf("requests carried partitions %v, want the two calls in one request", got)
	}
}

// A call still queued at its deadline, or when its context is cancelled,
// returns then, and is never sent.
func TestKafkaxProducerQueuedCallEndsByItsDeadline(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 1)
	held, release, parts := holdProduce(t, k)
	p := topicProducer(t, k, "late", 1)
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- produceOne(ctx, p, "late", 0, value("first")) }()
	<-held
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := produceOne(short, p, "late", 0, value("never")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued call past its deadline: %v, want a deadline error", err)
	}
	stopped, stop := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, stop)
	if err := produceOne(stopped, p, "late", 0, value("never either")); !errors.Is(err, context.Canceled) {
		t.Fatalf("queued call cancelled: %v, want context.Canceled", err)
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := produceOne(ctx, p, "late", 0, value("after")); err != nil {
		t.Fatal(err)
	}
	recs, err := testenv.Records(ctx, k.Addrs, "late")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || string(recs[0].Value) != "first" || string(recs[1].Value) != "after" {
		t.Fatalf("records %v, want first and after only", recs)
	}
	if got := parts(); len(got) != 2 {
		t.Fatalf("%d produce requests, want 2", len(got))
	}
}

// One ProduceAll call's batches for partitions of one leader go in one
// request, and each lands in its own partition.
func TestKafkaxProducerProduceAllSendsOneRequestPerLeader(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 3)
	_, release, parts := holdProduce(t, k)
	release()
	p := topicProducer(t, k, "all", maxInFlight)
	ctx := context.Background()
	errs := p.ProduceAll(ctx, []Batch{
		{Topic: "all", Partition: 2, Records: value("x2")},
		{Topic: "all", Partition: 0, Records: value("y0")},
		{Topic: "all", Partition: 1, Records: value("z1")},
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	if got, want := parts(), [][]int32{{2, 0, 1}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("requests carried partitions %v, want %v", got, want)
	}
	got := valuesAt(t, k, "all")
	if want := []string{"y0@0", "z1@1", "x2@2"}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
}

// A call goes at once while fewer than maxInFlight requests are under way,
// unless one of them carries its partition: then it waits for that one.
func TestKafkaxProducerPartitionWaitsForItsRequestUnderWay(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t, 2)
	held, release, parts := holdProduce(t, k)
	p := topicProducer(t, k, "flying", maxInFlight)
	ctx := context.Background()
	errs := make(chan error, 2)
	go func() { errs <- produceOne(ctx, p, "flying", 0, value("a0")) }()
	<-held
	go func() { errs <- produceOne(ctx, p, "flying", 0, value("b0")) }()
	queued(t, p, 1)
	// c1 goes beside the held request, and is answered while b0 waits.
	if err := produceOne(ctx, p, "flying", 1, value("c1")); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	for _, l := range p.lanes {
		if l.inflight != 1 || len(l.queue) != 1 || l.queue[0].partition != 0 {
			t.Errorf("after c1: %d requests under way, %d calls waiting; want a0 under way and b0 waiting",
				l.inflight, len(l.queue))
		}
	}
	p.mu.Unlock()
	release()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got, want := parts(), [][]int32{{0}, {1}, {0}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("requests carried partitions %v, want %v", got, want)
	}
	got := valuesAt(t, k, "flying")
	if want := []string{"a0@0", "b0@0", "c1@1"}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
}
