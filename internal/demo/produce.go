package demo

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/outbox"
)

const createDemoOrders = `CREATE TABLE IF NOT EXISTS demo_orders (
  id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  run          VARCHAR(32)     NOT NULL,
  amount_cents INT UNSIGNED    NOT NULL,
  created_at   DATETIME(6)     NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB`

const insertDemoOrder = `INSERT INTO demo_orders (run, amount_cents, created_at) VALUES (?, ?, UTC_TIMESTAMP(6))`

// produce runs the producers until ctx ends, printing progress every second.
// Transactions under way when ctx ends still finish, on workers.
func (d *Demo) produce(ctx context.Context, db *sql.DB, pub *outbox.Publisher, p *progress, workers context.Context) error {
	lim := rate.NewLimiter(rate.Limit(d.cfg.Rate), max(1, int(d.cfg.Rate/10)))
	g, gctx := errgroup.WithContext(ctx)
	for range d.cfg.Producers {
		g.Go(func() error {
			for lim.Wait(gctx) == nil {
				if err := d.order(workers, db, pub); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-tick.C:
				p.show(d.counters().String())
			}
		}
	})
	return g.Wait()
}

// order writes one order and its message in one transaction, and rolls it
// back instead of committing for a Config.Rollback fraction of orders.
func (d *Demo) order(ctx context.Context, db *sql.DB, pub *outbox.Publisher) error {
	d.produced.Add(1)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin order transaction: %w", err)
	}
	defer tx.Rollback()
	amount := 100 + rand.IntN(100000)
	res, err := tx.ExecContext(ctx, insertDemoOrder, d.id, amount)
	if err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	orderID, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	id := d.id + "-" + strconv.FormatInt(orderID, 10)
	msg := txmsg.Message{
		ID:    id,
		Topic: Topic,
		Key:   []byte("order-" + strconv.FormatInt(orderID, 10)),
		Value: fmt.Appendf(nil, `{"order":%d,"amount_cents":%d,"run":%q}`, orderID, amount, d.id),
	}
	if err := pub.Publish(ctx, tx, msg); err != nil {
		return fmt.Errorf("publish order %d: %w", orderID, err)
	}
	if rand.Float64() < d.cfg.Rollback {
		// Recorded before the rollback: a consumer seeing the id at any
		// time after this is a phantom.
		d.mu.Lock()
		d.rolledBack[id] = true
		d.mu.Unlock()
		return tx.Rollback()
	}
	err = tx.Commit()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		// The commit may or may not have happened: count it as neither.
		d.uncertain++
		d.log.Warn("commit failed; outcome unknown", slog.String("msg_id", id), slog.Any("err", err))
		return nil
	}
	d.committed[id] = true
	return nil
}
