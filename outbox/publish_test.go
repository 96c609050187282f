package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/codec"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
)

// countingExec records statements instead of running them.
type countingExec struct{ queries []string }

func (c *countingExec) ExecContext(_ context.Context, q string, _ ...any) (sql.Result, error) {
	c.queries = append(c.queries, q)
	return nil, nil
}

func TestOutboxNewPublisherRejectsBadOptions(t *testing.T) {
	for _, opts := range [][]outbox.Option{
		{outbox.WithShards(0)},
		{outbox.WithShards(5000)},
		{outbox.WithMaxValueBytes(0)},
	} {
		if _, err := outbox.NewPublisher(opts...); err == nil {
			t.Errorf("NewPublisher accepted bad options")
		}
	}
}

func TestOutboxPublishRejectsInvalidBeforeTouchingTheDatabase(t *testing.T) {
	p, err := outbox.NewPublisher(outbox.WithMaxValueBytes(300))
	if err != nil {
		t.Fatal(err)
	}
	ex := &countingExec{}
	err = p.Publish(context.Background(), ex,
		txmsg.Message{Topic: "ok", Value: []byte("fine")},
		txmsg.Message{Topic: "ok", Value: []byte(strings.Repeat("far too long ", 20))})
	if !errors.Is(err, txmsg.ErrInvalidMessage) || !strings.Contains(err.Error(), "message 1") {
		t.Fatalf("Publish = %v, want ErrInvalidMessage naming message 1", err)
	}
	if len(ex.queries) != 0 {
		t.Fatalf("%d statements ran for an invalid batch", len(ex.queries))
	}
	if err := p.Publish(context.Background(), ex); err != nil || len(ex.queries) != 0 {
		t.Fatalf("empty Publish = %v with %d statements, want a no-op", err, len(ex.queries))
	}
	if err := p.Publish(context.Background(), nil, txmsg.Message{Topic: "ok", Value: []byte("v")}); err == nil {
		t.Fatal("Publish with a nil Execer succeeded")
	}
	if err := p.Publish(context.Background(), ex, make([]txmsg.Message, outbox.MaxBatch+1)...); !errors.Is(err, txmsg.ErrInvalidMessage) {
		t.Fatalf("oversized batch: %v", err)
	}
}

func TestOutboxPublishOneStatementPerCall(t *testing.T) {
	ex := &countingExec{}
	msgs := make([]txmsg.Message, 50)
	for i := range msgs {
		msgs[i] = txmsg.Message{Topic: "t", Value: []byte("v")}
	}
	if err := outbox.Publish(context.Background(), ex, msgs...); err != nil {
		t.Fatal(err)
	}
	if len(ex.queries) != 1 || !strings.HasPrefix(ex.queries[0], "INSERT INTO txmsg_outbox") {
		t.Fatalf("statements = %d, want one INSERT", len(ex.queries))
	}
}

func TestOutboxPublishWritesRowsInTheCallersTransaction(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	msgs := []txmsg.Message{
		{Topic: "orders", Key: []byte("o-1"), Value: []byte("a"), Headers: []txmsg.Header{{Key: "h", Value: []byte{0, 1}}}},
		{ID: "mine", Topic: "orders", Value: []byte("b")},
	}
	tx, err := d.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Publish(ctx, tx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := d.DB.QueryRow("SELECT COUNT(*) FROM txmsg_outbox").Scan(&n); err != nil || n != 0 {
		t.Fatalf("after rollback: %d rows (%v), want 0", n, err)
	}

	before := time.Now().UTC().Add(-time.Second)
	if err := outbox.Publish(ctx, d.DB, msgs...); err != nil {
		t.Fatal(err)
	}
	rows, err := d.DB.Query("SELECT id, shard, msg_key, headers, created_at FROM txmsg_outbox ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		var shard int
		var key, hdr []byte
		var created time.Time
		if err := rows.Scan(&id, &shard, &key, &hdr, &created); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if shard != txmsg.Shard(key, id, outbox.DefaultShards) {
			t.Errorf("row %s: shard %d, want %d", id, shard, txmsg.Shard(key, id, outbox.DefaultShards))
		}
		if created.Before(before) {
			t.Errorf("row %s: created_at %v is not the current UTC time", id, created)
		}
		if id == ids[0] {
			hs, err := codec.DecodeHeaders(hdr)
			if err != nil || len(hs) != 1 || hs[0].Key != "h" || string(hs[0].Value) != "\x00\x01" {
				t.Errorf("headers round trip: %v, %v", hs, err)
			}
		}
	}
	if len(ids) != 2 || ids[1] != "mine" {
		t.Fatalf("ids = %v, want a generated one and mine", ids)
	}
	u, err := uuid.Parse(ids[0])
	if err != nil || u.Version() != 7 {
		t.Fatalf("generated id %q is not a UUIDv7 (%v)", ids[0], err)
	}
	if msgs[0].ID != "" {
		t.Error("Publish modified the caller's message")
	}
	if err := outbox.Publish(ctx, d.DB, msgs[1]); err == nil {
		t.Error("publishing an id twice succeeded")
	}
}

// UUIDv7 ids sort by creation time, also within one millisecond (the
// generator keeps a sequence), so ids are time-ordered.
func TestOutboxGeneratedIDsAreTimeOrdered(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	ctx := context.Background()
	for range 200 {
		if err := outbox.Publish(ctx, d.DB, txmsg.Message{Topic: "t", Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := d.DB.Query("SELECT id FROM txmsg_outbox ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	prev := ""
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		if id <= prev {
			t.Fatalf("id %s sorts before the earlier %s", id, prev)
		}
		prev = id
	}
}
