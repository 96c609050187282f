package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
)

// staleRecord returns a record of topic that follows, in its partition's
// log, a later record of its key (a duplicate may repeat the latest one,
// never an older one), or "" when there is none.
func staleRecord(addrs []string, topic string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := testenv.Records(ctx, addrs, topic)
	if err != nil {
		return "", err
	}
	latest := map[string]int{}
	var log []string
	for _, m := range recs {
		log = append(log, string(m.Value))
		k, nstr, _ := strings.Cut(string(m.Value), ":")
		n, err := strconv.Atoi(nstr)
		if err != nil {
			return "", fmt.Errorf("unexpected value %q", m.Value)
		}
		if n < latest[k] {
			return fmt.Sprintf("%s after %s:%d in log %v", m.Value, k, latest[k], log), nil
		}
		latest[k] = n
	}
	return "", nil
}

// watchNoStale fails the test as soon as topic holds a stale record, looking
// every 50ms for d: long enough for a retry of a request that came back
// failed (kafka-go backs off at most 1s) to land.
func watchNoStale(t *testing.T, addrs []string, topic string, d time.Duration) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	end := time.After(d)
	for {
		stale, err := staleRecord(addrs, topic)
		if err != nil {
			t.Fatal(err)
		}
		if stale != "" {
			t.Fatalf("stale record landed: %s", stale)
		}
		select {
		case <-end:
			return
		case <-tick.C:
		}
	}
}

// slowFirstProduce holds the first produce request that carries marker for
// hold, then fails it (kfake closes the connection, nothing is appended), as
// a broker that stalls and then drops the connection does. Later requests go
// through. It reports when the request arrived and when it was failed; the
// hold ends early when the test ends.
func slowFirstProduce(t *testing.T, k *testenv.Kafka, marker []byte, hold time.Duration) (arrived, failed <-chan struct{}) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	first, back := make(chan struct{}), make(chan struct{})
	var seen atomic.Bool
	k.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		if !produceCarries(req.(*kmsg.ProduceRequest), marker) || !seen.CompareAndSwap(false, true) {
			return nil, nil, false
		}
		close(first)
		k.Cluster.SleepControl(func() {
			select {
			case <-time.After(hold):
			case <-done:
			}
		})
		close(back)
		return nil, errors.New("stalled broker drops the connection"), true
	})
	return first, back
}

// waitClosed waits for ch, failing the test after d.
func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s did not happen within %v", what, d)
	}
}

// produceCarries says whether any record batch of req contains b.
func produceCarries(req *kmsg.ProduceRequest, b []byte) bool {
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			if bytes.Contains(p.Records, b) {
				return true
			}
		}
	}
	return false
}

// A produce that outlives its round is not retried behind the relay's back:
// the round gives up before its lease could expire, the next round sends
// the key again, and no stale copy of an older message lands after a newer
// one of its key.
func TestRelayTimedOutRoundLeavesNoRequestBehind(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	cfg := oneShardConfig(k.Addrs)
	hold := cfg.LeaseTTL + time.Second
	_, failed := slowFirstProduce(t, k, []byte("k:1"), hold)
	startEngine(t, d.DB, cfg)

	publishOneShard(t, d.DB, msg("stale", "k", 1), msg("stale", "k", 2))
	waitDelivered(t, k.Addrs, "stale", 2, 15*time.Second)
	waitClosed(t, failed, 2*hold, "the held request's failure")
	watchNoStale(t, k.Addrs, "stale", 2*time.Second)
}

// A relay that shuts down while a produce request is stuck releases its
// leases only after the request ended: the relay taking over its shard
// cannot be overtaken by a late copy of an older message.
func TestRelayShutdownReleasesLeasesAfterRequestsEnded(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 3)
	cfg := oneShardConfig(k.Addrs)
	hold := cfg.LeaseTTL + time.Second
	arrived, failed := slowFirstProduce(t, k, []byte("k:1"), hold)
	cfg.Owner = "leaving"
	leaving := startEngine(t, d.DB, cfg)
	publishOneShard(t, d.DB, msg("handoff", "k", 1), msg("handoff", "k", 2))
	waitClosed(t, arrived, 10*time.Second, "the first produce request")
	leaving.cancel()
	cfg.Owner = "taking-over"
	startEngine(t, d.DB, cfg)

	waitDelivered(t, k.Addrs, "handoff", 2, 15*time.Second)
	waitClosed(t, leaving.done, 20*time.Second, "the leaving relay's stop")
	waitClosed(t, failed, 2*hold, "the held request's failure")
	watchNoStale(t, k.Addrs, "handoff", 2*time.Second)
}

// refuseFirstN answers, with a retriable NOT_LEADER_FOR_PARTITION, the first
// n produce requests that carry marker.
func refuseFirstN(k *testenv.Kafka, marker []byte, n int64) *atomic.Int64 {
	var refused atomic.Int64
	k.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if !produceCarries(pr, marker) || refused.Load() >= n {
			return nil, nil, false
		}
		refused.Add(1)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = pr.Version
		for _, t := range pr.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, 6
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
	return &refused
}

// A round whose rows of one partition need several produce requests (their
// headers are large) stops at the first request Kafka refuses: the requests
// after it are not sent, or at least not marked, so no later message of a key
// is delivered before an earlier one.
func TestRelaySplitPartitionRoundStopsAtFirstFailedRequest(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	cfg := oneShardConfig(k.Addrs)
	cfg.BatchBytes = 64 << 10
	cfg.Writer.BatchBytes = 64 << 10
	refused := refuseFirstN(k, []byte("k:001"), 4)
	var msgs []txmsg.Message
	for i := 1; i <= 40; i++ {
		m := txmsg.Message{Topic: "split", Key: []byte("k"), Value: fmt.Appendf(nil, "k:%03d", i),
			Headers: []txmsg.Header{{Key: "pad", Value: bytes.Repeat([]byte("p"), 8<<10)}}}
		msgs = append(msgs, m)
	}
	publishOneShard(t, d.DB, msgs...)
	startEngine(t, d.DB, cfg)

	got := waitDelivered(t, k.Addrs, "split", 40, 20*time.Second)
	checkOrder(t, got, nil)
	if refused.Load() < 4 {
		t.Fatalf("%d requests refused: the fault never fired", refused.Load())
	}
}

// The relay reads pending rows at REPEATABLE READ (a consistent snapshot of
// committed rows) whatever the connection's default: on a pool defaulting to READ UNCOMMITTED it still does not
// publish the rows of a transaction that has not committed (and then rolls
// back).
func TestRelayIgnoresUncommittedRowsUnderReadUncommitted(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	dirty := d.ReadUncommittedPool(t)
	startEngine(t, dirty, oneShardConfig(k.Addrs))

	ctx := context.Background()
	tx, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`INSERT INTO txmsg_outbox (id, shard, topic, msg_key, value, created_at)
VALUES ('phantom', 0, 'dirty', 'a', 'a:1', UTC_TIMESTAMP(6))`); err != nil {
		t.Fatal(err)
	}
	// Committed after the open transaction's row: the round that delivers
	// it has read past that row.
	publishOneShard(t, d.DB, msg("dirty", "b", 1))
	got := waitDelivered(t, k.Addrs, "dirty", 1, 10*time.Second)
	for _, m := range got {
		if testenv.HeaderValue(m, txmsg.HeaderID) == "phantom" {
			t.Fatal("the relay published a row of an uncommitted transaction")
		}
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
}

// A pool whose sessions run with autocommit off is refused at start with an
// error that says so: the lease statements would never commit, and the
// relay would lose every shard it claimed.
func TestRelayRefusesAutocommitOff(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	k := testenv.NewKafka(t, 1)
	e, err := New(d.Pool(t, "autocommit=0"), oneShardConfig(k.Addrs), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Run(ctx); err == nil || !strings.Contains(err.Error(), "autocommit off") {
		t.Fatalf("Run on an autocommit-off pool: %v, want an error naming autocommit", err)
	}
}
