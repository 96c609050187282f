package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/txmsg/txmsg/internal/backoff"
	"github.com/txmsg/txmsg/internal/kafkax"
)

// derived is a topic Run writes to: a dead-letter or a retry topic.
type derived struct {
	origin string // the consumed topic whose shape it takes
	role   string // "dead-letter" or "retry"
}

// derivedTopics maps every dead-letter and retry topic of c to its origin.
func (c *Consumer) derivedTopics() map[string]derived {
	out := map[string]derived{}
	for _, t := range c.topics {
		if dlq := deadLetterTopic(c.o.dlqTopic, t, c.group); out[dlq].origin == "" {
			out[dlq] = derived{origin: t, role: "dead-letter"}
		}
		for i := range c.o.retryTiers {
			out[retryTopicName(t, c.group, i+1)] = derived{origin: t, role: "retry"}
		}
	}
	return out
}

// ensureTopics creates the dead-letter and retry topics that do not exist
// yet, before the groups join. Without it, on a cluster that does not
// create topics on first use, the first dead letter would be retried until
// Run gives up, and the retry group would have nothing to read. A transient
// failure (Kafka unreachable) is retried up to maxTransientRetries times; a
// refusal (no CREATE permission, a policy) fails at once, naming the topic.
func (c *Consumer) ensureTopics(ctx context.Context, log *slog.Logger, t *kafka.Transport) error {
	want := c.derivedTopics()
	for attempt := 1; ; attempt++ {
		retry, err := c.createTopics(ctx, want, t)
		if err == nil || !retry || attempt > maxTransientRetries {
			return err
		}
		log.Warn("consumer: create dead-letter and retry topics", slog.Int("attempt", attempt), slog.Any("error", err))
		if !backoff.Sleep(ctx, c.o.backoff.Delay(attempt)) {
			return errors.Join(err, ctx.Err())
		}
	}
}

// topicWait is how often Run looks again for topics it reads that do not
// exist yet.
const topicWait = 2 * time.Second

// waitTopics returns once every topic the consumer reads exists (looking
// every topicWait, saying once which it waits for), or with ctx's error.
// A group that joined first would be assigned only the partitions that
// exist and read nothing of a topic created later, and with partition
// watching on kafka-go would end every generation at once while one is
// missing. An error reading the metadata returns nil: ensureTopics, next,
// retries it and says so.
func (c *Consumer) waitTopics(ctx context.Context, log *slog.Logger, t *kafka.Transport) error {
	rt := kafka.DefaultTransport
	if t != nil {
		rt = t
	}
	said := map[string]bool{}
	for {
		// Allowing auto-creation, as a consumer's join does: on a cluster
		// that creates topics on demand, the topics exist once asked about.
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		res, err := rt.RoundTrip(rctx, kafka.TCP(c.brokers...), &metadataAPI.Request{TopicNames: c.topics, AllowAutoTopicCreation: true})
		cancel()
		if err != nil {
			return nil
		}
		meta, ok := res.(*metadataAPI.Response)
		if !ok {
			return nil
		}
		exists := map[string]bool{}
		for _, t := range meta.Topics {
			exists[t.Name] = t.ErrorCode == 0 && len(t.Partitions) > 0
		}
		missing := false
		for _, name := range c.topics {
			if !exists[name] {
				missing = true
				if !said[name] {
					said[name] = true
					log.Warn("consumer: waiting for topic "+name+" to exist before joining the group", slog.String("topic", name))
				}
			}
		}
		if !missing {
			return nil
		}
		if !backoff.Sleep(ctx, topicWait) {
			return ctx.Err()
		}
	}
}

// createTopics creates the topics of want that the metadata does not show,
// each with its origin's partitions and replication, or the broker's
// defaults when the origin does not exist yet, through t. retry says whether the
// error may pass.
func (c *Consumer) createTopics(ctx context.Context, want map[string]derived, t *kafka.Transport) (retry bool, err error) {
	cl := kafkax.NewClient(c.brokers, t, 30*time.Second)
	names := append([]string(nil), c.topics...)
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	meta, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return true, fmt.Errorf("consumer: metadata of topics %v: %w", names, err)
	}
	exists := map[string]kafka.Topic{}
	for _, t := range meta.Topics {
		if t.Error == nil && len(t.Partitions) > 0 {
			exists[t.Name] = t
		}
	}
	var req kafka.CreateTopicsRequest
	for _, name := range names {
		d, ok := want[name]
		if _, found := exists[name]; !ok || found {
			continue
		}
		tc := kafka.TopicConfig{Topic: name, NumPartitions: -1, ReplicationFactor: -1}
		if o, ok := exists[d.origin]; ok {
			tc.NumPartitions, tc.ReplicationFactor = len(o.Partitions), max(1, len(o.Partitions[0].Replicas))
		}
		req.Topics = append(req.Topics, tc)
	}
	if len(req.Topics) == 0 {
		return false, nil
	}
	res, err := cl.CreateTopics(ctx, &req)
	if err != nil {
		return true, fmt.Errorf("consumer: create topics: %w", err)
	}
	var errs []error
	for _, tc := range req.Topics {
		err := res.Errors[tc.Topic]
		if err == nil || errors.Is(err, kafka.TopicAlreadyExists) {
			continue
		}
		var kerr kafka.Error
		retry = retry || errors.As(err, &kerr) && kerr.Temporary()
		d := want[tc.Topic]
		errs = append(errs, fmt.Errorf("consumer: create %s topic %s of %s: %w (create it beforehand "+
			"or allow this client CREATE on it; the consumer also needs WRITE on it)", d.role, tc.Topic, d.origin, err))
	}
	return retry, errors.Join(errs...)
}
