package kafkax

import (
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// NewConsumerGroup returns a kafka-go ConsumerGroup for c.Group reading
// c.Topics, for callers that read each assigned partition themselves (with
// NewPartitionReader) and commit through the Generation: a Generation
// names the partitions the member owns and commits with its generation id,
// so a member commits only what it owns. A partition without a committed
// offset is assigned kafka.FirstOffset, so nothing published before the
// group's first start is skipped. The group starts joining at once; Close
// leaves it. Partitions added to its topics are assigned within about 5s.
// Only c's group fields are used.
func NewConsumerGroup(brokers []string, c ReaderConfig) (*kafka.ConsumerGroup, error) {
	if err := c.checkGroup(brokers); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	gc := kafka.ConsumerGroupConfig{
		ID:                c.Group,
		Brokers:           append([]string(nil), brokers...),
		Topics:            append([]string(nil), c.Topics...),
		GroupBalancers:    c.Balancers,
		HeartbeatInterval: c.HeartbeatInterval,
		SessionTimeout:    c.SessionTimeout,
		RebalanceTimeout:  c.RebalanceTimeout,
		JoinGroupBackoff:  c.JoinGroupBackoff,
		// kafka-go waits Timeout + RebalanceTimeout for a join, and after a
		// timeout gives up its member ID: the coordinator keeps the abandoned
		// member until a later rebalance drops it, so each retry is one more
		// member to wait for. A coordinator may answer a join only once a
		// dead member's session expired and a rebalance timeout passed
		// (kfake starts that timeout again at every change of the group),
		// so the wait covers the session too, with kafka-go's default (5s)
		// on top for a busy coordinator. Heartbeats and commits wait as
		// long: a coordinator that stopped answering has rebalanced the
		// member away by then anyway.
		Timeout:     c.SessionTimeout + coordinatorMargin,
		StartOffset: kafka.FirstOffset,
		// Partitions added to a topic end the generation, so that the
		// group rebalances and reads them (kafka-go leaves them unread
		// otherwise until the membership changes).
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 5 * time.Second,
	}
	if c.Logger != nil {
		gc.ErrorLogger = errorLogger(c.Logger, "kafka consumer group")
	}
	if !c.Security.IsZero() {
		gc.Dialer = c.Security.dialer(10 * time.Second)
	}
	cg, err := kafka.NewConsumerGroup(gc)
	if err != nil {
		return nil, fmt.Errorf("kafka: consumer group %s: %w", c.Group, err)
	}
	return cg, nil
}

// coordinatorMargin is kafka-go's own timeout of a coordinator request,
// which a group's timeouts add on top of the session (see NewConsumerGroup).
const coordinatorMargin = 5 * time.Second

// NewPartitionReader returns a Reader of one partition, starting at offset
// (an absolute offset or kafka.FirstOffset), that reads committed records
// only (read_committed) with c's fetch fields: MaxWait, QueueCapacity (how
// many fetched messages it buffers ahead of FetchMessage), MaxBytes and
// Logger and Security. It has no group: the caller commits through a Generation.
func NewPartitionReader(brokers []string, topic string, partition int, offset int64, c ReaderConfig) (*kafka.Reader, error) {
	if err := CheckBrokers(brokers); err != nil {
		return nil, err
	}
	if topic == "" {
		return nil, errors.New("kafka: empty topic name")
	}
	c = c.withDefaults()
	rc := c.fetchConfig(brokers)
	rc.Topic, rc.Partition = topic, partition
	if err := rc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka: reader of %s/%d: %w", topic, partition, err)
	}
	r := kafka.NewReader(rc)
	if err := r.SetOffset(offset); err != nil {
		return nil, errors.Join(fmt.Errorf("kafka: reader of %s/%d: start at offset %d: %w", topic, partition, offset, err), r.Close())
	}
	return r, nil
}
