package relay

import (
	"context"
	"strings"
	"testing"

	"github.com/txmsg/txmsg/internal/testenv"
)

// ScanRows keeps a NULL key nil and an empty one empty (Kafka tells them
// apart), gives each row its own bytes (appending to one does not write over
// the next), and keeps the stored headers of a row whose headers do not
// decode.
func TestScanRowsKeepsEachRowsBytes(t *testing.T) {
	t.Parallel()
	d := testenv.NewDB(t)
	big := strings.Repeat("v", 70<<10)
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE scanned (seq BIGINT PRIMARY KEY, id VARCHAR(64), shard INT, topic VARCHAR(249),
			msg_key VARBINARY(767) NULL, value LONGBLOB, headers BLOB NULL, created_at DATETIME(6), attempts INT)`,
		`INSERT INTO scanned VALUES (1, 'a', 0, 't', '', 'one', NULL, UTC_TIMESTAMP(6), 0),
			(2, 'b', 1, 't', NULL, 'two', '[{"k":"h","v":"aGk="}]', UTC_TIMESTAMP(6), 1)`,
	} {
		if _, err := d.DB.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.DB.ExecContext(ctx, `INSERT INTO scanned VALUES (3, 'c', 2, 'u', 'k3', ?, 'not json', UTC_TIMESTAMP(6), 0)`, big); err != nil {
		t.Fatal(err)
	}
	rows, err := d.DB.QueryContext(ctx, `SELECT seq, id, shard, topic, msg_key, value, headers, created_at, attempts FROM scanned ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ScanRows(rows, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("ScanRows returned %d rows; want 3", len(got))
	}
	if got[0].Key == nil || len(got[0].Key) != 0 || got[1].Key != nil {
		t.Fatalf("keys %q (nil: %v) and %q (nil: %v); want an empty key empty and a NULL one nil",
			got[0].Key, got[0].Key == nil, got[1].Key, got[1].Key == nil)
	}
	got[0].Value = append(got[0].Value, "XYZ"...)
	if string(got[1].Value) != "two" || string(got[2].Key) != "k3" || string(got[2].Value) != big {
		t.Fatalf("after an append to row 1's value, row 2's value is %q, row 3's key %q and value %d bytes: rows share bytes", got[1].Value, got[2].Key, len(got[2].Value))
	}
	if got[0].ID != "a" || got[1].Topic != "t" || got[2].Topic != "u" || got[1].Attempts != 1 || got[2].Shard != 2 {
		t.Fatalf("rows %+v", got)
	}
	if len(got[1].Headers) != 1 || got[1].Headers[0].Key != "h" || string(got[1].Headers[0].Value) != "hi" {
		t.Fatalf("row 2's headers %+v; want h=hi", got[1].Headers)
	}
	if got[2].badHeaders == nil || string(got[2].rawHeaders) != "not json" {
		t.Fatalf("row 3: bad headers %v, stored %q; want them marked and kept", got[2].badHeaders, got[2].rawHeaders)
	}
}
