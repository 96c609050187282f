package relay

import (
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"github.com/txmsg/txmsg/internal/testenv"
)

// pollSource is the outbox through the Source methods alone (neither
// SingleRead nor Changes), counting the polls made in a transaction and on
// the pool.
type pollSource struct {
	out        *OutboxSource
	consistent bool
	inTx, pool atomic.Int64
	// shards counts the polls of each shard.
	shards [16]atomic.Int64
}

func (s *pollSource) Name() string { return s.out.Name() }

func (s *pollSource) Pending(ctx context.Context, q Querier, shard int, limit Limit) ([]Row, error) {
	if _, ok := q.(*sql.Tx); ok {
		s.inTx.Add(1)
	} else {
		s.pool.Add(1)
	}
	if shard < len(s.shards) {
		s.shards[shard].Add(1)
	}
	return s.out.Pending(ctx, q, shard, limit)
}

func (s *pollSource) Delivered(ctx context.Context, e Execer, rows []Row) error {
	return s.out.Delivered(ctx, e, rows)
}

func (s *pollSource) Failed(ctx context.Context, e Execer, rows []Row, reason string) error {
	return s.out.Failed(ctx, e, rows, reason)
}

func (s *pollSource) Remove(ctx context.Context, e Execer, rows []Row) error {
	return s.out.Remove(ctx, e, rows)
}

func (s *pollSource) Backlog(ctx context.Context, q Querier) (int64, time.Time, error) {
	return s.out.Backlog(ctx, q)
}

func (s *pollSource) ConsistentRead() bool { return s.consistent }

// The Engine polls a ConsistentRead source on its pool, sparing an idle poll
// the three statements of a transaction, and any other source (but a
// SingleRead one) in a REPEATABLE READ transaction of its own; both deliver.
func TestEnginePollsAConsistentReadSourceOnThePool(t *testing.T) {
	t.Parallel()
	for _, consistent := range []bool{true, false} {
		d := testenv.NewDB(t)
		k := testenv.NewKafka(t, 1)
		src := &pollSource{out: NewOutboxSource(false), consistent: consistent}
		startEngine(t, d.DB, testConfig(k.Addrs), WithSources(src))
		topic := "consistent-read"
		if !consistent {
			topic = "read-in-tx"
		}
		if err := publishTx(context.Background(), d.DB, true, msg(topic, "k", 1)); err != nil {
			t.Fatal(err)
		}
		waitDelivered(t, k.Addrs, topic, 1, 20*time.Second)
		inTx, pool := src.inTx.Load(), src.pool.Load()
		if consistent && (inTx != 0 || pool == 0) || !consistent && (pool != 0 || inTx == 0) {
			t.Errorf("ConsistentRead %v: %d polls in a transaction, %d on the pool", consistent, inTx, pool)
		}
	}
}
