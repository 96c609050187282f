package relay

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// newSeededKafka starts a one-broker kfake cluster that holds only topics
// and creates no others: a metadata request for any other topic answers
// UNKNOWN_TOPIC_OR_PARTITION, as a cluster with auto-creation off does.
func newSeededKafka(t *testing.T, partitions int32, topics ...string) *testenv.Kafka {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...), kfake.Ports(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &testenv.Kafka{Cluster: c, Addrs: c.ListenAddrs()}
}

// publishOneShard writes msgs in one committed transaction into shard 0 of
// a one-shard outbox, so that they all queue in one shard in this order.
func publishOneShard(t *testing.T, db *sql.DB, msgs ...txmsg.Message) {
	t.Helper()
	p, err := outbox.NewPublisher(outbox.WithShards(1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, tx, msgs...); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// oneShardConfig is testConfig for a one-shard outbox.
func oneShardConfig(brokers []string) Config {
	cfg := testConfig(brokers)
	cfg.Shards = 1
	return cfg
}

// deadIDs returns the ids of the dead letters and their errors.
func deadIDs(t *testing.T, db *sql.DB) map[string]DeadLetter {
	t.Helper()
	ds, err := ListDead(context.Background(), db, 100)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]DeadLetter{}
	for _, d := range ds {
		out[d.ID] = d
	}
	return out
}

// refuseProduce makes the cluster refuse topic's partitions in every produce
// request with err while on is set, as Kafka answers per topic: the other
// topics of a request are written.
func refuseProduce(k *testenv.Kafka, topic string, err *kerr.Error, on *atomic.Bool) {
	k.Cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: err, Count: -1,
		When: func(kmsg.Request) bool { return on.Load() }})
}

// Messages to a topic that does not exist, on a cluster that does not create
// topics, are dead-lettered after their attempts with the error, while the
// other topics' messages queued in the same shard between them are delivered
// at once.
func TestRelayUnknownTopicIsDeadLetteredWithoutBlockingTheShard(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := newSeededKafka(t, 3, "known")
	cfg := oneShardConfig(k.Addrs)
	cfg.MaxAttempts = 3
	cfg.RetryMax = 100 * time.Millisecond
	startEngine(t, d.DB, cfg)

	ghost := func(n int) txmsg.Message {
		m := msg("ghost", "a", n)
		m.ID = fmt.Sprintf("ghost-%d", n)
		return m
	}
	publishOneShard(t, d.DB, ghost(1), msg("known", "b", 1), ghost(2), msg("known", "b", 2), msg("known", "c", 1))
	msgs := waitDelivered(t, k.Addrs, "known", 3, 10*time.Second)
	checkOrder(t, msgs, nil)

	testenv.Eventually(t, 15*time.Second, func() error {
		dead := deadIDs(t, d.DB)
		for _, id := range []string{"ghost-1", "ghost-2"} {
			dl, ok := dead[id]
			if !ok {
				return fmt.Errorf("%s not dead-lettered yet", id)
			}
			if dl.Attempts != cfg.MaxAttempts || !strings.Contains(dl.LastError, "Unknown Topic Or Partition") {
				return fmt.Errorf("dead letter %s after %d attempts with error %q, want %d attempts and the unknown topic",
					id, dl.Attempts, dl.LastError, cfg.MaxAttempts)
			}
		}
		return nil
	})
	if n := countRows(t, d.DB, "SELECT COUNT(*) FROM txmsg_outbox"); n != 0 {
		t.Fatalf("%d rows left in the outbox", n)
	}
}

// Kafka refuses a topic for authorization: its message is retried, then
// dead-lettered with the error, while another topic's messages in the same
// shard flow; once the ACL is fixed, the key's next message is delivered.
func TestRelayUnauthorizedTopicIsDeadLetteredAndOthersFlow(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	var denied atomic.Bool
	denied.Store(true)
	refuseProduce(k, "acl", kerr.TopicAuthorizationFailed, &denied)
	cfg := oneShardConfig(k.Addrs)
	cfg.MaxAttempts = 3
	cfg.RetryMax = 100 * time.Millisecond
	startEngine(t, d.DB, cfg)

	first := msg("acl", "a", 1)
	first.ID = "acl-1"
	publishOneShard(t, d.DB, first, msg("open", "b", 1), msg("open", "a", 1), msg("open", "b", 2))
	msgs := waitDelivered(t, k.Addrs, "open", 3, 10*time.Second)
	checkOrder(t, msgs, nil)
	testenv.Eventually(t, 15*time.Second, func() error {
		dl, ok := deadIDs(t, d.DB)["acl-1"]
		if !ok {
			return fmt.Errorf("acl-1 not dead-lettered yet")
		}
		if dl.Attempts != cfg.MaxAttempts || !strings.Contains(dl.LastError, "Topic Authorization Failed") {
			return fmt.Errorf("dead letter after %d attempts with error %q, want %d attempts and the authorization error",
				dl.Attempts, dl.LastError, cfg.MaxAttempts)
		}
		return nil
	})

	denied.Store(false)
	publishOneShard(t, d.DB, msg("acl", "a", 2))
	msgs = waitDelivered(t, k.Addrs, "acl", 1, 10*time.Second)
	if string(msgs[0].Value) != "a:2" {
		t.Fatalf("topic acl holds %q, want a:2", msgs[0].Value)
	}
}

// Rows of a (topic, key) queue behind one Kafka refuses: none overtakes it,
// and once the refusal ends they are delivered in order.
func TestRelayRefusedMessageHoldsBackItsKeyOnly(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	var denied atomic.Bool
	denied.Store(true)
	refuseProduce(k, "held", kerr.TopicAuthorizationFailed, &denied)
	cfg := oneShardConfig(k.Addrs)
	cfg.MaxAttempts = 1000
	cfg.RetryMax = 100 * time.Millisecond
	startEngine(t, d.DB, cfg)

	publishOneShard(t, d.DB, msg("held", "a", 1), msg("held", "a", 2), msg("other", "b", 1), msg("held", "a", 3))
	waitDelivered(t, k.Addrs, "other", 1, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := countRows(t, d.DB, "SELECT MAX(attempts) FROM txmsg_outbox WHERE topic = 'held'"); n < 2 {
			return fmt.Errorf("held messages tried %d times, want at least 2", n)
		}
		return nil
	})
	denied.Store(false)
	msgs := waitDelivered(t, k.Addrs, "held", 3, 10*time.Second)
	checkOrder(t, msgs, nil)
	if n := len(deadIDs(t, d.DB)); n != 0 {
		t.Fatalf("%d dead letters, want none", n)
	}
}

// A row whose stored headers do not decode (cut by a non-strict sql_mode,
// say) is dead-lettered with the decoding error instead of failing every
// poll of its shard; the rows around it are delivered.
func TestRelayUndecodableHeadersAreDeadLettered(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	publishOneShard(t, d.DB, msg("bad", "a", 1))
	if _, err := d.DB.Exec(`INSERT INTO txmsg_outbox (id, shard, topic, msg_key, value, headers, created_at)
VALUES ('cut', 0, 'bad', 'a', 'a:2', '[{"k":"trace","v":"dA', UTC_TIMESTAMP(6))`); err != nil {
		t.Fatal(err)
	}
	publishOneShard(t, d.DB, msg("bad", "a", 3), msg("bad", "b", 1))
	startEngine(t, d.DB, oneShardConfig(k.Addrs))

	msgs := waitDelivered(t, k.Addrs, "bad", 3, 10*time.Second)
	checkOrder(t, msgs, nil)
	dl, ok := deadIDs(t, d.DB)["cut"]
	if !ok {
		t.Fatal("the row with undecodable headers was not dead-lettered")
	}
	if !strings.Contains(dl.LastError, "decode headers") || string(dl.Value) != "a:2" {
		t.Fatalf("dead letter %q with error %q, want a:2 and a decoding error", dl.Value, dl.LastError)
	}
}
