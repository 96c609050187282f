package chaos

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/outbox"
)

// rollbackShare is the share of business transactions rolled back on
// purpose.
const rollbackShare = 0.1

// workerKeys is how many keys each producer goroutine owns. A key belongs
// to one goroutine, so its transactions run one after the other and their
// order (n) is the order the key's messages must keep.
const workerKeys = 8

const insertOrder = `INSERT INTO chaos_orders (msg_id, topic, msg_key, n, created_at) VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6))`

// producerStats counts what producers did; the business tables, not these,
// decide what committed.
type producerStats struct {
	attempts, failed atomic.Int64
}

// outboxProducer writes an order and its outbox message in one business
// transaction, rolling back rollbackShare of them. The first key of each
// goroutine publishes to the doomed topic, the others to the main one.
type outboxProducer struct {
	db      *sql.DB
	run     string
	rate    float64
	workers int
	topic   string
	doomed  string
	stats   producerStats
}

// produce writes until ctx ends.
func (p *outboxProducer) produce(ctx context.Context) {
	var wg sync.WaitGroup
	for w := range p.workers {
		wg.Go(func() { p.work(ctx, w) })
	}
	wg.Wait()
}

func (p *outboxProducer) work(ctx context.Context, w int) {
	lim := rate.NewLimiter(rate.Limit(p.rate/float64(p.workers)), 1)
	var next [workerKeys]int
	for i := 0; lim.Wait(ctx) == nil; i++ {
		k := i % workerKeys
		next[k]++
		topic := p.topic
		if k == 0 {
			topic = p.doomed
		}
		key := "o" + strconv.Itoa(w) + "-" + strconv.Itoa(k)
		p.stats.attempts.Add(1)
		if err := p.send(ctx, topic, key, next[k]); err != nil && !errors.Is(err, errRolledBack) {
			p.stats.failed.Add(1)
		}
	}
}

// errRolledBack is how a transaction rolled back on purpose ends.
var errRolledBack = errors.New("chaos: rolled back on purpose")

// send runs one business transaction: the order row and its message.
func (p *outboxProducer) send(ctx context.Context, topic, key string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id := fmt.Sprintf("%s-%s-%d", p.run, key, n)
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, insertOrder, id, topic, key, n); err != nil {
		return err
	}
	err = outbox.Publish(ctx, tx, txmsg.Message{ID: id, Topic: topic, Key: []byte(key), Value: []byte(strconv.Itoa(n))})
	if err != nil {
		return err
	}
	if rand.Float64() < rollbackShare {
		return errors.Join(errRolledBack, tx.Rollback())
	}
	return tx.Commit()
}
