package consumer

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/kafkax"
	"github.com/txmsg/txmsg/internal/testenv"
)

// Benchmark sizes stay modest: they run on a 2-core machine.
const (
	benchPartitions = 6
	benchKafkaMsgs  = 100000
	benchTxMsgs     = 2000
	benchTxLanes    = 2 // per partition, so 12 concurrent transactions
)

// benchTopic produces n keyed records with txmsg-id headers to a fresh
// topic of benchPartitions partitions.
func benchTopic(b *testing.B, n int) (*testenv.Kafka, string) {
	b.Helper()
	k := testenv.NewKafka(b, benchPartitions)
	const topic = "bench"
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = record(topic, "k"+strconv.Itoa(i%500), "id-"+strconv.Itoa(i), strconv.Itoa(i))
	}
	for i := 0; i < n; i += 5000 {
		produce(b, k.Addrs, msgs[i:min(i+5000, n)]...)
	}
	return k, topic
}

// rawGroupRate reads the whole topic with a plain kafka-go group reader,
// FetchMessage and CommitMessages per batch of 100, and returns messages
// per second from the first message to the last commit.
func rawGroupRate(b *testing.B, addrs []string, topic, group string, n int) float64 {
	b.Helper()
	r, err := kafkax.NewGroupReader(addrs, kafkax.ReaderConfig{Group: group, Topics: []string{topic},
		HeartbeatInterval: 200 * time.Millisecond, SessionTimeout: 6 * time.Second,
		RebalanceTimeout: 6 * time.Second, JoinGroupBackoff: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var first time.Time
	batch := make([]kafka.Message, 0, 100)
	for got := 0; got < n; {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			b.Fatalf("fetch: %v", err)
		}
		if got == 0 {
			first = time.Now()
		}
		got++
		batch = append(batch, m)
		if len(batch) == cap(batch) || got == n {
			if err := r.CommitMessages(ctx, batch...); err != nil {
				b.Fatalf("commit: %v", err)
			}
			batch = batch[:0]
		}
	}
	return float64(n) / time.Since(first).Seconds()
}

// sdkRate runs c with h until n messages were handled and returns messages
// per second from the first to the last.
func sdkRate(b *testing.B, c *Consumer, n int, h func(context.Context, *sql.Tx, Message) error) float64 {
	b.Helper()
	var count atomic.Int64
	var first, last atomic.Int64
	done := make(chan struct{})
	tick := func() {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		if count.Add(1) == int64(n) {
			last.Store(now)
			close(done)
		}
	}
	var handler Handler = HandlerFunc(func(ctx context.Context, m Message) error { tick(); return nil })
	if h != nil {
		handler = TxHandlerFunc(func(ctx context.Context, tx *sql.Tx, m Message) error {
			if err := h(ctx, tx, m); err != nil {
				return err
			}
			tick()
			return nil
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx, handler) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("handled %d of %d within 2 minutes", count.Load(), n)
	}
	cancel()
	if err := <-errc; err != nil {
		b.Fatalf("Run: %v", err)
	}
	return float64(n) / (time.Duration(last.Load() - first.Load()).Seconds())
}

// BenchmarkConsumerNoop compares, on one kfake broker, a raw kafka-go
// group reader (FetchMessage + CommitMessages per batch of 100) with the
// SDK running a no-op HandlerFunc. Reported: both rates and their ratio.
func BenchmarkConsumerNoop(b *testing.B) {
	k, topic := benchTopic(b, benchKafkaMsgs)
	var raw, sdk float64
	for i := 0; i < b.N; i++ {
		raw += rawGroupRate(b, k.Addrs, topic, fmt.Sprintf("raw-%d", i), benchKafkaMsgs)
		c, err := New(k.Addrs, fmt.Sprintf("sdk-%d", i), []string{topic}, fastGroup())
		if err != nil {
			b.Fatal(err)
		}
		sdk += sdkRate(b, c, benchKafkaMsgs, nil)
	}
	b.ReportMetric(raw/float64(b.N), "raw_msgs/s")
	b.ReportMetric(sdk/float64(b.N), "sdk_msgs/s")
	b.ReportMetric(sdk/raw, "sdk/raw")
}

// BenchmarkConsumerInbox compares the SDK running a TxHandlerFunc with the
// inbox on MariaDB against plain local transactions of the same business
// insert, at the same concurrency (partitions x lanes). Reported: both
// rates and their ratio.
func BenchmarkConsumerInbox(b *testing.B) {
	k, topic := benchTopic(b, benchTxMsgs)
	db := newDB(b)
	createEffectsTable(b, db)
	workers := benchPartitions * benchTxLanes
	var plain, sdk float64
	for i := 0; i < b.N; i++ {
		plain += plainTxRate(b, db, benchTxMsgs, workers)
		c, err := New(k.Addrs, fmt.Sprintf("inbox-%d", i), []string{topic}, fastGroup(), WithInbox(db),
			WithConcurrency(benchTxLanes))
		if err != nil {
			b.Fatal(err)
		}
		sdk += sdkRate(b, c, benchTxMsgs, insertEffect)
	}
	b.ReportMetric(plain/float64(b.N), "plain_tx/s")
	b.ReportMetric(sdk/float64(b.N), "sdk_tx/s")
	b.ReportMetric(sdk/plain, "sdk/plain")
}

// plainTxRate runs n transactions of the effects insert on workers
// goroutines and returns transactions per second.
func plainTxRate(b *testing.B, db *sql.DB, n, workers int) float64 {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	ctx := context.Background()
	t0 := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				tx, err := db.BeginTx(ctx, nil)
				if err == nil {
					_, err = tx.ExecContext(ctx, `INSERT INTO effects (msg_id, k, n) VALUES (?, ?, ?)`, "plain-"+strconv.FormatInt(i, 10), "k", i)
					if err == nil {
						err = tx.Commit()
					} else {
						_ = tx.Rollback()
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("plain transaction: %v", err)
	}
	return float64(n) / time.Since(t0).Seconds()
}
