package relay

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/kafkax"
)

// maxRequestBytes caps one produce request (a message bigger than it travels
// alone): Kafka's default max.message.bytes applies to a whole record batch,
// so a bigger request would be refused as too large.
const maxRequestBytes = 1 << 20

// plan is one round's rows sorted out: those to send, one batch per
// partition, and those refused before any request.
type plan struct {
	src Source
	// rows are those the round read, in seq order; read counts them.
	rows    []Row
	read    int
	batches []*batch
	// refused are rows that will not be sent this round for a reason that
	// costs them an attempt.
	refused []refusal
	// held counts rows left pending without an attempt spent: behind a
	// backoff, or behind an earlier row of their key.
	held int
	// refusedTopics are the topics the cluster refused as a whole, and
	// waitTopics those it could not answer for yet (being created, say).
	refusedTopics map[string]bool
	waitTopics    map[string]bool
}

// batch is a round's rows for one partition, in seq order, and what became
// of them. Only the goroutine sending it writes its outcome fields.
type batch struct {
	topic     string
	partition int
	rows      []Row
	delivered []Row
	refused   []refusal
	held      int
	// failed is the retriable error that stopped the batch.
	failed error
	// topicRefused says Kafka refused the whole topic.
	topicRefused bool
}

// refusal is a row Kafka refused (or could never take), with why. A final
// refusal is dead-lettered at once: the row can never be sent as stored.
type refusal struct {
	row   Row
	err   error
	final bool
}

// kind sorts a failure by what it says about the records.
type kind uint8

const (
	// retriable: it may pass (network, leader change, timeout); retry after
	// a backoff without spending an attempt.
	retriable kind = iota + 1
	// refusesRecords: Kafka refused these records for good (too large,
	// invalid); retrying the same bytes cannot succeed.
	refusesRecords
	// refusesTopic: no record of the topic can be written (it does not
	// exist and is not created, or access is denied): an operator must act.
	refusesTopic
)

// classify sorts err. An unknown topic counts as refused only where the
// metadata says so (planTopics): in a produce answer it usually means stale
// metadata (the topic was deleted and is being recreated), which the
// Producer refreshes.
func classify(err error) kind {
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) || errors.Is(err, txmsg.ErrInvalidMessage) {
		return refusesRecords
	}
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		switch kerr {
		// Not here: CORRUPT_MESSAGE, which Kafka retries itself.
		case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge, kafka.InvalidRecord,
			kafka.UnsupportedForMessageFormat:
			return refusesRecords
		case kafka.TopicAuthorizationFailed, kafka.InvalidTopic:
			return refusesTopic
		}
	}
	return retriable
}

// plan sorts rows, in seq order: each goes to its partition's batch, or is
// refused, or stays pending behind a backoff or behind an earlier row of its
// (topic, key) that is not sent this round. Order per key is per topic, as
// Kafka keeps it: a key's rows in another topic do not wait.
func (e *Engine) plan(ctx context.Context, w *shardWorker, rows []Row) (*plan, error) {
	now := e.since()
	p := &plan{src: w.src, rows: rows, read: len(rows), refusedTopics: map[string]bool{}, waitTopics: map[string]bool{}}
	var topics []string
	for _, r := range rows {
		if !slices.Contains(topics, r.Topic) && txmsg.ValidateTopic(r.Topic) == nil && !w.holds.active(topicHold(r.Topic), now) {
			topics = append(topics, r.Topic)
		}
	}
	var info map[string]kafkax.TopicInfo
	if len(topics) > 0 {
		var err error
		if info, err = e.producer.Topics(ctx, topics); err != nil {
			e.metrics.Error(w.src.Name(), "publish")
			return nil, err
		}
	}
	blocked := map[string]bool{}
	block := func(r Row) { blocked[rowKeyHold(&r)] = true }
	byPartition := map[string]*batch{}
	for _, r := range rows {
		if kh := rowKeyHold(&r); blocked[kh] || w.holds.active(kh, now) {
			p.held++
			block(r)
			continue
		}
		if r.badHeaders != nil {
			p.refused = append(p.refused, refusal{row: r, err: r.badHeaders, final: true})
			block(r)
			continue
		}
		if err := e.sendable(&r); err != nil {
			p.refused = append(p.refused, refusal{row: r, err: err})
			block(r)
			continue
		}
		if w.holds.active(topicHold(r.Topic), now) {
			p.held++
			block(r)
			continue
		}
		ti := info[r.Topic]
		if ti.Err != nil {
			if errors.Is(ti.Err, kafka.UnknownTopicOrPartition) || classify(ti.Err) == refusesTopic {
				// The topic refuses every row: each is charged, so a topic
				// that stays unwritable drains to the dead letters at the
				// pace of its attempts instead of one key at a time.
				p.refused = append(p.refused, refusal{row: r, err: ti.Err})
				p.refusedTopics[r.Topic] = true
				continue
			}
			p.waitTopics[r.Topic] = true
			p.held++
			block(r)
			continue
		}
		part := e.producer.Partition(r.Key, ti.Partitions)
		ph := partitionHold(r.Topic, part)
		if w.holds.active(ph, now) {
			p.held++
			block(r)
			continue
		}
		b := byPartition[ph]
		if b == nil {
			b = &batch{topic: r.Topic, partition: part}
			byPartition[ph] = b
			p.batches = append(p.batches, b)
		}
		b.rows = append(b.rows, r)
	}
	return p, nil
}

// sendable rejects, before any network call, a row Kafka would refuse.
func (e *Engine) sendable(r *Row) error {
	if err := txmsg.ValidateTopic(r.Topic); err != nil {
		return err
	}
	if recordSize(r) > e.maxMessage {
		return kafka.MessageTooLargeError{}
	}
	return nil
}

// recordSize is about what r takes in a produce request.
func recordSize(r *Row) int64 {
	return int64(txmsg.RecordBytes(r.Key, r.Value, r.ID, r.Headers))
}

// send writes every batch of p: each step sends the next request of every
// batch not done yet, together (the Producer puts a leader's partitions in
// one request), and each batch's next request waits until its last one was
// acknowledged.
func (e *Engine) send(ctx context.Context, w *shardWorker, p *plan) {
	sends := make([]*sending, len(p.batches))
	for i, b := range p.batches {
		sends[i] = &sending{b: b, rows: b.rows, refusedKeys: map[string]bool{}}
	}
	for len(sends) > 0 {
		if ctx.Err() != nil {
			// The round is over (lease or shutdown): start no request.
			for _, s := range sends {
				s.b.failed = ctx.Err()
				s.b.held += len(s.rows)
			}
			return
		}
		var reqs [][]Row
		kept := sends[:0]
		for _, s := range sends {
			if req := s.next(e.maxRequest); len(req) > 0 {
				reqs = append(reqs, req)
				kept = append(kept, s)
			}
		}
		sends = kept
		if len(sends) == 0 {
			return
		}
		errs := e.produce(ctx, w.src, sends, reqs)
		kept = sends[:0]
		for i, s := range sends {
			if s.answer(reqs[i], errs[i]) {
				kept = append(kept, s)
			}
		}
		sends = kept
	}
}

// sending is a batch on its way: its rows go to their partition in seq
// order, in as few requests as maxRequestBytes allows, each sent only once
// the one before it was acknowledged: a request that fails stops the batch,
// so no row is acknowledged after an earlier row of its key that was not. A
// request refused as a whole for its records (too large for the broker,
// say) is sent again one row per request, to charge only the culprit.
type sending struct {
	b *batch
	// rows are those not sent yet.
	rows        []Row
	refusedKeys map[string]bool
	// singles counts rows still to be sent one per request.
	singles int
}

// next takes the rows of the next request off s.rows (none: s is done).
func (s *sending) next(maxRequest int64) []Row {
	for len(s.rows) > 0 {
		var req []Row
		var size int64
		n := 0
		for ; n < len(s.rows); n++ {
			r := &s.rows[n]
			if r.Key != nil && s.refusedKeys[string(r.Key)] {
				// Behind a refused row of its key: it waits for the next round.
				s.b.held++
				continue
			}
			sz := recordSize(r)
			if len(req) > 0 && (s.singles > 0 || size+sz > maxRequest) {
				break
			}
			req = append(req, *r)
			size += sz
		}
		s.rows = s.rows[n:]
		if len(req) > 0 {
			if s.singles > 0 {
				s.singles--
			}
			return req
		}
	}
	return nil
}

// answer records what Kafka answered to req, and says whether s goes on.
func (s *sending) answer(req []Row, err error) bool {
	b := s.b
	if err == nil {
		b.delivered = append(b.delivered, req...)
		return true
	}
	switch classify(err) {
	case refusesTopic:
		b.topicRefused = true
		for _, r := range append(req, s.rows...) {
			b.refused = append(b.refused, refusal{row: r, err: err})
		}
		s.rows = nil
		return false
	case refusesRecords:
		if len(req) > 1 {
			s.singles = len(req)
			s.rows = append(req, s.rows...)
			return true
		}
		b.refused = append(b.refused, refusal{row: req[0], err: err})
		if req[0].Key != nil {
			s.refusedKeys[string(req[0].Key)] = true
		}
		return true
	default:
		b.failed = err
		b.held += len(req) + len(s.rows)
		s.rows = nil
		return false
	}
}

// produce sends each request to its batch's partition, all at once, and
// returns each one's error by index.
func (e *Engine) produce(ctx context.Context, src Source, sends []*sending, reqs [][]Row) []error {
	now := time.Now()
	bs := make([]kafkax.Batch, len(reqs))
	for i, rows := range reqs {
		recs := make([]kafka.Record, len(rows))
		for j, r := range rows {
			hs := make([]kafka.Header, 0, len(r.Headers)+2)
			for _, h := range r.Headers {
				hs = append(hs, kafka.Header{Key: h.Key, Value: h.Value})
			}
			hs = append(hs,
				kafka.Header{Key: txmsg.HeaderID, Value: []byte(r.ID)},
				kafka.Header{Key: txmsg.HeaderSource, Value: []byte(src.Name())})
			recs[j] = kafka.Record{Time: now, Key: kafka.NewBytes(r.Key), Value: kafka.NewBytes(r.Value), Headers: hs}
		}
		bs[i] = kafkax.Batch{Topic: sends[i].b.topic, Partition: sends[i].b.partition, Records: recs}
	}
	errs := e.producer.ProduceAll(ctx, bs)
	e.metrics.PublishLatency(src.Name(), time.Since(now))
	for _, err := range errs {
		if err != nil {
			e.metrics.Error(src.Name(), "publish")
		}
	}
	return errs
}

// logBatchFailure reports a batch stopped by a retriable error.
func (e *Engine) logBatchFailure(w *shardWorker, b *batch, attempt int) {
	e.log.Warn("relay publish failed", slog.String("source", w.src.Name()), slog.Int("shard", w.shard),
		slog.String("topic", b.topic), slog.Int("partition", b.partition), slog.Int("attempt", attempt),
		slog.Any("error", b.failed))
}
