package consumer

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// pipeline is one group Reader with its tracker and lanes: one for the
// consumer's topics and, with retry tiers, one for the retry topics.
type pipeline struct {
	reader *kafka.Reader
	track  *tracker
	lanes  map[laneKey]*lane // owned by the fetch loop
	wg     sync.WaitGroup    // lane workers
}

type laneKey struct {
	tp  tpKey
	idx int
}

// lane is one worker of a partition: it handles its messages in order.
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

// closeLanes closes every lane and waits for the workers to return.
func (p *pipeline) closeLanes() {
	for _, l := range p.lanes {
		close(l.ch)
	}
	p.wg.Wait()
}

// fetchLoop fetches and dispatches p's messages until ctx is done.
func (r *run) fetchLoop(ctx context.Context, p *pipeline) {
	var failures int
	for {
		km, err := p.reader.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			r.log.Warn("consumer: fetch", slog.Any("error", err), slog.Int("attempt", failures))
			if !r.wait(r.c.o.backoff.Delay(failures)) {
				return
			}
			continue
		}
		failures = 0
		if lag := km.HighWaterMark - km.Offset - 1; km.HighWaterMark > 0 && lag >= 0 {
			r.metrics.Lag(r.c.group, km.Topic, km.Partition, lag)
		}
		if err := r.c.limiter.Wait(ctx); err != nil {
			return
		}
		d := delivery{msg: fromKafka(km)}
		if rt, ok := r.retry[km.Topic]; ok {
			d.retry = parseRetry(rt, &d.msg)
		}
		tp := tpKey{km.Topic, km.Partition}
		l := r.lane(p, laneKey{tp: tp, idx: r.laneIndex(&d.msg)})
		d.e = p.track.add(tp, km.Offset)
		select {
		case l.ch <- d:
		case <-ctx.Done():
			return
		}
	}
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

// lane returns p's lane for k, starting its worker on first use.
func (r *run) lane(p *pipeline, k laneKey) *lane {
	if l := p.lanes[k]; l != nil {
		return l
	}
	l := &lane{ch: make(chan delivery, r.c.o.laneBuffer)}
	p.lanes[k] = l
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for d := range l.ch {
			if r.stopping() {
				continue
			}
			if r.process(d) {
				p.track.finish(d.e)
			}
		}
	}()
	return l
}

func (r *run) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// wait sleeps d unless shutdown starts first; it reports whether d passed.
func (r *run) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.stop:
		return false
	}
}

// commitLoop commits low watermarks every commit interval until ctx is done.
func (r *run) commitLoop(ctx context.Context) {
	t := time.NewTicker(r.c.o.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.commit(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("consumer: commit offsets", slog.Any("error", err))
			}
		}
	}
}

// commit commits every partition's low watermark that moved.
func (r *run) commit(ctx context.Context) error {
	var errs []error
	for _, p := range r.pipes {
		msgs := p.track.pending()
		if len(msgs) == 0 || r.c.skipCommits {
			continue
		}
		if err := p.reader.CommitMessages(ctx, msgs...); err != nil {
			errs = append(errs, fmt.Errorf("consumer: commit %d partitions: %w", len(msgs), err))
			continue
		}
		p.track.committed(msgs)
	}
	return errors.Join(errs...)
}
