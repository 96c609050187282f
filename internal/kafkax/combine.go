package kafkax

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"
)

// maxCombinedBytes caps the records of calls that share one request, well
// under a broker's socket.request.max.bytes (100 MiB by default); each
// call's own records are capped by the caller (a record batch must fit
// max.message.bytes).
const maxCombinedBytes = 8 << 20

// maxInFlight is how many requests to one leader may be under way at once.
// kafka-go sends all of a broker's requests on one connection, and Kafka
// serves a connection's requests one at a time, so a second request only
// waits ready behind the first (the round trip between them is hidden);
// more would only split into more requests what can share one.
const maxInFlight = 2

// lane is the produce requests to one leader broker. A call goes at once
// while fewer than maxInFlight requests are under way and none carries its
// partition; otherwise it waits, and the next request to end takes every
// call waiting that it can, as a group commit does. A round of the relay
// hands all its partitions at once, so at a trickle it makes one request,
// and when many shards publish together they share requests (fewer
// requests, fewer thread wake-ups on both sides).
type lane struct {
	queue    []*call
	inflight int
	// flying are the partitions of the requests under way.
	flying map[partitionKey]bool
}

// call is one batch of a ProduceAll, in a lane or a request.
type call struct {
	topic     string
	partition int
	recs      []kafka.Record
	size      int64
	deadline  time.Time
	// taken is set, under the Producer's mu, once a request carries the call.
	taken bool
	err   error
	done  chan struct{}
}

// Batch is one partition's records for ProduceAll.
type Batch struct {
	Topic     string
	Partition int
	Records   []kafka.Record
}

// ProduceAll writes each batch to its partition in one record batch, waits
// for every in-sync replica to acknowledge it (acks=all), and returns each
// batch's error by index. Batches whose partitions have the same leader go
// in one request, and so do concurrent calls': a batch that finds
// maxInFlight requests to its leader under way, or one carrying its
// partition, waits for one to end and shares the next request with the
// others waiting, as a group commit does. A partition is in one request at
// a time, so each partition's records land in the order the batches came;
// give a partition once per call. A batch still waiting when ctx ends
// leaves unsent. A request lives until ctx's deadline (at most
// WriteTimeout; a shared request until the earliest of its calls'):
// cancelling ctx does not end it sooner, because kafka-go would still write
// a request it had dequeued, while a passed deadline fails the socket. So
// once ProduceAll returns, nothing of its batches can still be sent; a
// request that timed out may or may not have been appended. An answer that
// says the cached metadata is stale (no such topic or leader) refreshes it
// for the next call.
func (p *Producer) ProduceAll(ctx context.Context, bs []Batch) []error {
	deadline := time.Now().Add(p.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	calls := make([]*call, len(bs))
	lanes := make([]*lane, len(bs))
	var alone [][]*call
	var touched []*lane
	p.mu.Lock()
	for i, b := range bs {
		c := &call{topic: b.Topic, partition: b.Partition, recs: b.Records, size: recordsSize(b.Records),
			deadline: deadline, done: make(chan struct{})}
		calls[i] = c
		leader := int32(-1)
		if ls := p.leaders[b.Topic]; b.Partition >= 0 && b.Partition < len(ls) {
			leader = ls[b.Partition]
		}
		if leader < 0 {
			// No leader known to group by: the batch goes alone.
			c.taken = true
			alone = append(alone, []*call{c})
			continue
		}
		l := p.lanes[leader]
		if l == nil {
			l = &lane{flying: map[partitionKey]bool{}}
			p.lanes[leader] = l
		}
		lanes[i] = l
		l.queue = append(l.queue, c)
		if !slices.Contains(touched, l) {
			touched = append(touched, l)
		}
	}
	// Requests this call can start go from its own goroutine (no hand-off
	// at a trickle); what waits goes with the next request to end.
	type job struct {
		l     *lane
		batch []*call
	}
	var jobs []job
	for _, b := range alone {
		jobs = append(jobs, job{batch: b})
	}
	now := time.Now()
	for _, l := range touched {
		if l.inflight < p.inFlight {
			if b := l.take(now); len(b) > 0 {
				l.inflight++
				jobs = append(jobs, job{l, b})
			}
		}
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for i, j := range jobs {
		run := func() {
			p.send(j.batch)
			if j.l != nil {
				p.ended(j.l, j.batch, true)
			}
		}
		if i == len(jobs)-1 {
			run()
			break
		}
		wg.Go(run)
	}
	wg.Wait()
	errs := make([]error, len(calls))
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for i, c := range calls {
		errs[i] = p.await(wctx, c, lanes[i])
	}
	return errs
}

// await waits for c to end. When ctx ends first and no request carries c
// yet, c leaves l's queue unsent.
func (p *Producer) await(ctx context.Context, c *call, l *lane) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if !c.taken {
		l.queue = slices.DeleteFunc(l.queue, func(q *call) bool { return q == c })
		c.unsent(ctx.Err())
	}
	p.mu.Unlock()
	<-c.done
	return c.err
}

// unsent ends c, which no request carried, with why. The caller holds the
// Producer's mu.
func (c *call) unsent(why error) {
	c.taken = true
	c.err = fmt.Errorf("kafka: produce %d records to %s/%d: not sent: %w", len(c.recs), c.topic, c.partition, why)
	close(c.done)
}

// ended follows a request of l that carried batch: it starts the next
// request with the calls waiting, from a goroutine of its own when handOff
// is set (the caller's goroutine returns to its caller), until none waits
// that can go.
func (p *Producer) ended(l *lane, batch []*call, handOff bool) {
	for {
		p.mu.Lock()
		for _, c := range batch {
			delete(l.flying, partitionKey{c.topic, c.partition})
		}
		batch = l.take(time.Now())
		if len(batch) == 0 {
			l.inflight--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		if handOff {
			go func() {
				p.send(batch)
				p.ended(l, batch, false)
			}()
			return
		}
		p.send(batch)
	}
}

// take removes from the queue, in order, the calls the next request carries:
// one per partition, none of a partition a request under way carries (a
// later call of a partition waits for a later request, so a partition's
// calls land in the order they came), and at most maxCombinedBytes, at
// least one call if any can go. Calls past their deadline are ended unsent.
// The caller holds the Producer's mu.
func (l *lane) take(now time.Time) []*call {
	var batch []*call
	var size int64
	kept := l.queue[:0]
	for _, c := range l.queue {
		pk := partitionKey{c.topic, c.partition}
		switch {
		case !now.Before(c.deadline):
			c.unsent(context.DeadlineExceeded)
		case l.flying[pk] || (len(batch) > 0 && size+c.size > maxCombinedBytes):
			kept = append(kept, c)
		default:
			l.flying[pk] = true
			size += c.size
			c.taken = true
			batch = append(batch, c)
		}
	}
	clear(l.queue[len(kept):])
	l.queue = kept
	return batch
}

type partitionKey struct {
	topic     string
	partition int
}

// send writes batch in one request to the partitions' leader and ends every
// call of it with its partition's answer. A request whose partitions the
// transport's metadata places on different leaders (the leaders moved since
// Topics) is sent again a call at a time.
func (p *Producer) send(batch []*call) {
	err := p.roundTrip(batch)
	var local *produceAPI.Error
	if len(batch) > 1 && errors.As(err, &local) {
		// Refused before anything was written (no leader, or more than one).
		for _, c := range batch {
			p.finish(c, p.roundTrip([]*call{c}))
		}
		return
	}
	for _, c := range batch {
		p.finish(c, err)
	}
}

// finish ends c with err (nil: c.err as the answer set it).
func (p *Producer) finish(c *call, err error) {
	if err != nil {
		c.err = err
	}
	if c.err != nil {
		if staleMetadata(c.err) {
			p.Refresh()
		}
		c.err = fmt.Errorf("kafka: produce %d records to %s/%d: %w", len(c.recs), c.topic, c.partition, c.err)
	}
	close(c.done)
}

// roundTrip sends batch as one produce request and sets each call's err
// from its partition's answer. It returns the error of the request as a
// whole.
func (p *Producer) roundTrip(batch []*call) error {
	deadline := batch[0].deadline
	req := &produceAPI.Request{Acks: int16(kafka.RequireAll)}
	at := map[partitionKey]*call{}
	for _, c := range batch {
		if c.deadline.Before(deadline) {
			deadline = c.deadline
		}
		at[partitionKey{c.topic, c.partition}] = c
		rp := produceAPI.RequestPartition{Partition: int32(c.partition),
			RecordSet: protocol.RecordSet{Records: kafka.NewRecordReader(c.recs...)}}
		if i := slices.IndexFunc(req.Topics, func(t produceAPI.RequestTopic) bool { return t.Topic == c.topic }); i >= 0 {
			req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
		} else {
			req.Topics = append(req.Topics, produceAPI.RequestTopic{Topic: c.topic,
				Partitions: []produceAPI.RequestPartition{rp}})
		}
	}
	req.Timeout = int32(max(time.Until(deadline), time.Millisecond) / time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	m, err := p.transport.RoundTrip(ctx, p.addr, req)
	if err != nil {
		return err
	}
	answered := map[partitionKey]bool{}
	for _, t := range m.(*produceAPI.Response).Topics {
		for _, rp := range t.Partitions {
			pk := partitionKey{t.Topic, int(rp.Partition)}
			c := at[pk]
			if c == nil || answered[pk] {
				continue
			}
			answered[pk] = true
			switch {
			case rp.ErrorCode != 0 && rp.ErrorMessage != "":
				c.err = fmt.Errorf("%w: %s", kafka.Error(rp.ErrorCode), rp.ErrorMessage)
			case rp.ErrorCode != 0:
				c.err = kafka.Error(rp.ErrorCode)
			case len(rp.RecordErrors) > 0:
				first := slices.MinFunc(rp.RecordErrors, func(a, b produceAPI.ResponseError) int {
					return int(a.BatchIndex - b.BatchIndex)
				})
				c.err = fmt.Errorf("%w: record %d of %d: %s", kafka.InvalidRecord, first.BatchIndex, len(c.recs),
					first.BatchIndexErrorMessage)
			}
		}
	}
	for pk, c := range at {
		if !answered[pk] {
			c.err = fmt.Errorf("no answer for the partition: %w", protocol.ErrNoPartition)
		}
	}
	return nil
}

// learn keeps the partitions' leaders the cluster named, to group calls by.
func (p *Producer) learn(info map[string]TopicInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for t, ti := range info {
		if ti.Err != nil {
			delete(p.leaders, t)
			continue
		}
		p.leaders[t] = ti.Leaders
	}
}

// recordsSize is about what recs take in a request.
func recordsSize(recs []kafka.Record) int64 {
	var n int64
	for _, r := range recs {
		n += 64
		if r.Key != nil {
			n += int64(r.Key.Len())
		}
		if r.Value != nil {
			n += int64(r.Value.Len())
		}
		for _, h := range r.Headers {
			n += int64(len(h.Key) + len(h.Value) + 8)
		}
	}
	return n
}
