package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// Producer sends records with acks=all, a record batch per partition, the
// partitions that share a leader in one request, and concurrent calls'
// partitions in shared requests (see ProduceAll). Unlike kafka-go's Writer
// it never retries on its own: a Writer goes on retrying a batch in the
// background after WriteMessages returned its context's error, so a stale
// copy can land after newer records of its key that the caller sent
// meanwhile. A Producer is safe for concurrent use.
type Producer struct {
	addr      net.Addr
	transport *kafka.Transport
	timeout   time.Duration
	// balancer places keys as the Java client and kafka-go's Writer do.
	balancer kafka.Murmur2Balancer

	mu sync.Mutex
	// leaders is the leader broker of each topic's partitions, as the last
	// Topics call said.
	leaders map[string][]int32
	// lanes are the requests to each leader broker, at most inFlight of
	// them under way in each.
	lanes    map[int32]*lane
	inFlight int
}

// TopicInfo is what a Producer knows of a topic: its partition count, or
// the error that keeps it from being written.
type TopicInfo struct {
	Partitions int
	// Leaders holds each partition's leader broker id, by partition index
	// (-1 where the cluster named none).
	Leaders []int32
	// Err is set when the cluster answered that the topic cannot be written:
	// kafka.UnknownTopicOrPartition (it does not exist and is not created
	// automatically), kafka.TopicAuthorizationFailed, kafka.InvalidTopic,
	// or a transient kafka.LeaderNotAvailable while it is being created.
	Err error
}

// NewProducer returns a Producer for brokers. Of c it uses Transport (its
// dialer, TLS and SASL) and WriteTimeout
// (default 10s), the longest a request may take when the caller's context
// allows more.
func NewProducer(brokers []string, c WriterConfig) (*Producer, error) {
	if err := CheckBrokers(brokers); err != nil {
		return nil, err
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	// A transport of its own (c.Transport's settings when given, for TLS and
	// SASL): Close then stops only the producer's connections.
	t := &kafka.Transport{ClientID: "txmsg"}
	if c.Transport != nil {
		t = &kafka.Transport{ClientID: "txmsg", Dial: c.Transport.Dial, TLS: c.Transport.TLS, SASL: c.Transport.SASL}
	}
	addr := kafka.TCP(brokers...)
	return &Producer{
		addr:      addr,
		transport: t,
		timeout:   c.WriteTimeout,
		leaders:   map[string][]int32{},
		lanes:     map[int32]*lane{},
		inFlight:  maxInFlight,
	}, nil
}

// Topics returns what the cluster says of topics, creating missing ones
// where the cluster allows it. Metadata is cached (and refreshed every few
// seconds, or at once after a produce answer that says it is stale). The
// error is for the request as a whole: no broker answered.
func (p *Producer) Topics(ctx context.Context, topics []string) (map[string]TopicInfo, error) {
	r, err := p.transport.RoundTrip(ctx, p.addr, &metadataAPI.Request{TopicNames: topics, AllowAutoTopicCreation: true})
	if err != nil {
		return nil, fmt.Errorf("kafka: metadata of %d topics: %w", len(topics), err)
	}
	out := make(map[string]TopicInfo, len(topics))
	for _, t := range r.(*metadataAPI.Response).Topics {
		switch {
		case t.ErrorCode != 0:
			out[t.Name] = TopicInfo{Err: kafka.Error(t.ErrorCode)}
		case len(t.Partitions) == 0:
			out[t.Name] = TopicInfo{Err: kafka.LeaderNotAvailable}
		default:
			leaders := make([]int32, len(t.Partitions))
			for i := range leaders {
				leaders[i] = -1
			}
			for _, part := range t.Partitions {
				if part.PartitionIndex >= 0 && int(part.PartitionIndex) < len(leaders) {
					leaders[part.PartitionIndex] = part.LeaderID
				}
			}
			out[t.Name] = TopicInfo{Partitions: len(t.Partitions), Leaders: leaders}
		}
	}
	p.learn(out)
	for _, t := range topics {
		if _, ok := out[t]; !ok {
			out[t] = TopicInfo{Err: kafka.UnknownTopicOrPartition}
		}
	}
	return out, nil
}

// Partition returns the partition of key among n: murmur2(key) mod n, as
// kafka-go's Murmur2Balancer and Java's default partitioner place it, and a
// random one for a nil key.
func (p *Producer) Partition(key []byte, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return p.balancer.Balance(kafka.Message{Key: key}, parts...)
}

// staleMetadata says whether err means the cached metadata no longer matches
// the cluster: the topic was deleted or recreated, or its leader moved.
func staleMetadata(err error) bool {
	return errors.Is(err, kafka.UnknownTopicOrPartition) || errors.Is(err, kafka.NotLeaderForPartition) ||
		errors.Is(err, kafka.LeaderNotAvailable) || errors.Is(err, protocol.ErrNoTopic) ||
		errors.Is(err, protocol.ErrNoPartition) || errors.Is(err, protocol.ErrNoLeader)
}

// Refresh drops the cached metadata and idle connections, so the next call
// asks the cluster afresh. Requests under way finish on their connections.
func (p *Producer) Refresh() { p.transport.CloseIdleConnections() }

// Close closes idle connections. Requests under way end by their deadlines;
// the Producer stays usable (a later call connects again).
func (p *Producer) Close() { p.transport.CloseIdleConnections() }
