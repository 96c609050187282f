package relay

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// BenchmarkRelayProducerOverhead compares a business transaction alone, the
// same plus outbox.Publish of one message, and the same plus a second
// business INSERT (the budget: one extra INSERT).
func BenchmarkRelayProducerOverhead(b *testing.B) {
	d := testenv.NewDB(b)
	ctx := context.Background()
	if _, err := d.DB.Exec(`CREATE TABLE bench_orders (id BIGINT AUTO_INCREMENT PRIMARY KEY,
customer VARCHAR(64) NOT NULL, amount INT NOT NULL, note VARBINARY(256))`); err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 256)
	insert := func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO bench_orders (customer, amount, note) VALUES (?, ?, ?)", "c", 42, value)
		return err
	}
	variants := []struct {
		name  string
		extra func(tx *sql.Tx) error
	}{
		{"plain", func(*sql.Tx) error { return nil }},
		{"outbox", func(tx *sql.Tx) error {
			return outbox.Publish(ctx, tx, txmsg.Message{Topic: "orders", Key: []byte("c"), Value: value})
		}},
		{"two_inserts", insert},
	}
	const txs, workers = 2000, 8
	for range b.N {
		rates := map[string]float64{}
		for _, v := range variants {
			start := time.Now()
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range txs / workers {
						tx, err := d.DB.BeginTx(ctx, nil)
						if err != nil {
							b.Error(err)
							return
						}
						if err := insert(tx); err != nil {
							b.Error(err)
						}
						if err := v.extra(tx); err != nil {
							b.Error(err)
						}
						if err := tx.Commit(); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			rates[v.name] = txs / time.Since(start).Seconds()
		}
		b.ReportMetric(rates["plain"], "plain_tx/s")
		b.ReportMetric(rates["outbox"], "outbox_tx/s")
		b.ReportMetric(rates["two_inserts"], "two_inserts_tx/s")
		b.ReportMetric(rates["outbox"]/rates["plain"], "outbox/plain")
		b.ReportMetric(rates["outbox"]/rates["two_inserts"], "outbox/two_inserts")
	}
}
