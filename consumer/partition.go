package consumer

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/backoff"
	"github.com/txmsg/txmsg/internal/kafkax"
)

// Buffers between Kafka and the handlers, per partition.
const (
	// readerQueue is how many fetched messages a partition's reader holds
	// ahead of the fetch loop.
	readerQueue = 100
	// laneBuffer is how many messages wait for one lane's worker.
	laneBuffer = 256
)

// partition is one partition assigned to this member in one generation: its
// reader, its tracker and its lanes (one worker per lane, each handling its
// messages in order).
type partition struct {
	r      *run
	tp     tpKey
	reader *kafka.Reader
	track  *tracker
	// ctx is done when the generation ends or shutdown begins: fetch no
	// more, start no handler, stop waiting between attempts.
	ctx context.Context
	// hctx is the handlers' context; drain cancels it once the drain
	// timeout passed.
	hctx           context.Context
	cancelHandlers context.CancelFunc
	lanes          map[int]*lane  // owned by the fetch loop
	wg             sync.WaitGroup // lane workers
}

type tpKey struct {
	topic     string
	partition int
}

// lane is one worker's queue.
type lane struct {
	ch chan delivery
}

// delivery is a fetched message on its way to a lane.
type delivery struct {
	msg Message
	e   *entry
	// retry is set for a message fetched from a retry topic.
	retry *retryInfo
}

// newPartition opens a reader of the assigned partition from its committed
// offset; ctx ends the partition's work.
func (r *run) newPartition(ctx context.Context, topic string, a kafka.PartitionAssignment) (*partition, error) {
	reader, err := kafkax.NewPartitionReader(r.c.brokers, topic, a.ID, a.Offset,
		kafkax.ReaderConfig{QueueCapacity: readerQueue, Logger: r.c.o.logger, Security: r.c.o.security})
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	hctx, cancel := context.WithCancel(r.hctx)
	return &partition{
		r: r, tp: tpKey{topic, a.ID}, reader: reader, ctx: ctx, hctx: hctx, cancelHandlers: cancel,
		track: newTracker(r.c.o.inFlightMessages, r.c.o.inFlightBytes),
		lanes: map[int]*lane{},
	}, nil
}

// run fetches and dispatches the partition's messages until its ctx is
// done, then drains it.
func (pt *partition) run() {
	pt.fetch()
	pt.close()
	pt.drain()
}

// close stops the reader and its prefetching.
func (pt *partition) close() {
	if err := pt.reader.Close(); err != nil {
		pt.r.log.Warn("consumer: close reader", slog.String("topic", pt.tp.topic),
			slog.Int("partition", pt.tp.partition), slog.Any("error", err))
	}
}

// drain drops the messages no lane has started and waits for the running
// handlers, canceling their context once the drain timeout passed.
func (pt *partition) drain() {
	for _, l := range pt.lanes {
		close(l.ch)
	}
	timeout := pt.r.c.o.drainTimeout
	timer := time.AfterFunc(timeout, func() {
		pt.r.log.Warn("consumer: drain timeout passed; canceling running handlers", slog.String("topic", pt.tp.topic),
			slog.Int("partition", pt.tp.partition), slog.Duration("timeout", timeout))
		pt.cancelHandlers()
	})
	pt.wg.Wait()
	timer.Stop()
	pt.cancelHandlers()
}

// fetch fetches messages and hands them to their lanes until ctx is done,
// pausing while the partition's in-flight work is at its limit.
func (pt *partition) fetch() {
	r := pt.r
	var failures int
	for {
		if err := pt.track.waitRoom(pt.ctx); err != nil {
			return
		}
		km, err := pt.reader.FetchMessage(pt.ctx)
		if err != nil {
			if pt.ctx.Err() != nil {
				return
			}
			failures++
			r.log.Warn("consumer: fetch", slog.String("topic", pt.tp.topic), slog.Int("partition", pt.tp.partition),
				slog.Int("attempt", failures), slog.Any("error", err))
			if !backoff.Sleep(pt.ctx, r.c.o.backoff.Delay(failures)) {
				return
			}
			continue
		}
		failures = 0
		if lag := km.HighWaterMark - km.Offset - 1; km.HighWaterMark > 0 && lag >= 0 {
			r.metrics.Lag(r.c.group, km.Topic, km.Partition, lag)
		}
		if err := r.c.waitRate(pt.ctx); err != nil {
			return
		}
		if !pt.dispatch(km) {
			return
		}
	}
}

// dispatch records km in the tracker and queues it on its lane; it reports
// false when ctx ended first.
func (pt *partition) dispatch(km kafka.Message) bool {
	d := delivery{msg: fromKafka(km)}
	if rt, ok := pt.r.retry[km.Topic]; ok {
		d.retry = parseRetry(rt, &d.msg)
	}
	l := pt.lane(pt.r.laneIndex(&d.msg))
	d.e = pt.track.add(km.Offset, messageSize(km))
	select {
	case l.ch <- d:
		return true
	case <-pt.ctx.Done():
		return false
	}
}

// messageSize is what a message weighs against the in-flight byte limit.
func messageSize(km kafka.Message) int64 {
	n := len(km.Key) + len(km.Value)
	for _, h := range km.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// laneIndex sends every message of a key to the same lane of its
// partition; keyless messages spread by offset.
func (r *run) laneIndex(m *Message) int {
	n := r.c.o.concurrency
	if n == 1 {
		return 0
	}
	if m.Key == nil {
		return int(m.Offset % int64(n))
	}
	h := fnv.New32a()
	h.Write(m.Key)
	return int(h.Sum32() % uint32(n))
}

// lane returns lane idx, starting its worker on first use. The worker
// skips what is left in its queue once ctx is done: those messages belong
// to the partition's next owner, or to the next Run.
func (pt *partition) lane(idx int) *lane {
	if l := pt.lanes[idx]; l != nil {
		return l
	}
	l := &lane{ch: make(chan delivery, laneBuffer)}
	pt.lanes[idx] = l
	pt.wg.Go(func() {
		for d := range l.ch {
			if pt.ctx.Err() != nil {
				continue
			}
			if pt.r.process(pt, d) {
				pt.track.finish(d.e)
			}
		}
	})
	return l
}
