package relaytest

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/txmsg/txmsg/relay"
)

func testName(s *suite) {
	if n := s.Source.Name(); n == "" || len(n) > 16 {
		s.Fatalf("Name %q: want 1 to 16 characters", n)
	}
}

// Pending returns one shard's rows, all of their fields, in Seq order.
func testPendingOrder(s *suite) {
	a, b, shardA, shardB := s.keys()
	msgsA := s.add(a, 3, 10)
	msgsB := s.add(b, 2, 10)
	msgsA = append(msgsA, s.add(a, 2, 10)...)
	rows := s.pending(s.DB, shardA)
	s.wantIDs("Pending of shard A", rows, msgIDs(msgsA))
	for i, r := range rows {
		m := msgsA[i]
		if r.Shard != shardA || r.Topic != m.Topic || !bytes.Equal(r.Key, m.Key) || !bytes.Equal(r.Value, m.Value) ||
			len(r.Headers) != 1 || r.Headers[0].Key != "i" || !bytes.Equal(r.Headers[0].Value, m.Headers[0].Value) ||
			r.Attempts != 0 || r.CreatedAt.IsZero() {
			s.Fatalf("row %d = %+v, want message %+v in shard %d", i, r, m, shardA)
		}
		if i > 0 && r.Seq <= rows[i-1].Seq {
			s.Fatalf("row %d has seq %d after %d: want ascending", i, r.Seq, rows[i-1].Seq)
		}
	}
	s.wantIDs("Pending of shard B", s.pending(s.DB, shardB), msgIDs(msgsB))
}

// Pending stops at limit.Rows, and after the row whose key and value bring
// the total to limit.Bytes.
func testPendingLimits(s *suite) {
	key, _, shard, _ := s.keys()
	msgs := s.add(key, 5, 100) // 105 bytes of key and value each
	rows, err := s.Source.Pending(s.ctx, s.DB, shard, relay.Limit{Rows: 2})
	if err != nil {
		s.Fatal(err)
	}
	s.wantIDs("Pending with 2 rows", rows, msgIDs(msgs[:2]))
	rows, err = s.Source.Pending(s.ctx, s.DB, shard, relay.Limit{Rows: 10, Bytes: 250})
	if err != nil {
		s.Fatal(err)
	}
	s.wantIDs("Pending with 250 bytes", rows, msgIDs(msgs[:3]))
	rows, err = s.Source.Pending(s.ctx, s.DB, shard, relay.Limit{Rows: 10, Bytes: 1})
	if err != nil {
		s.Fatal(err)
	}
	s.wantIDs("Pending with 1 byte", rows, msgIDs(msgs[:1]))
}

// Delivered and Remove take rows out of Pending, also rows of several shards
// in one call; an empty call does nothing.
func testTakeOut(s *suite) {
	a, b, shardA, shardB := s.keys()
	msgsA := s.add(a, 4, 10)
	s.add(b, 2, 10)
	rowsA, rowsB := s.pending(s.DB, shardA), s.pending(s.DB, shardB)
	for name, f := range map[string]func([]relay.Row) error{
		"Delivered": func(r []relay.Row) error { return s.Source.Delivered(s.ctx, s.DB, r) },
		"Remove":    func(r []relay.Row) error { return s.Source.Remove(s.ctx, s.DB, r) },
		"Failed":    func(r []relay.Row) error { return s.Source.Failed(s.ctx, s.DB, r, "x") },
	} {
		if err := f(nil); err != nil {
			s.Fatalf("%s of no rows: %v", name, err)
		}
	}
	if err := s.Source.Delivered(s.ctx, s.DB, []relay.Row{rowsA[0], rowsA[1], rowsB[0]}); err != nil {
		s.Fatalf("Delivered: %v", err)
	}
	if err := s.Source.Remove(s.ctx, s.DB, []relay.Row{rowsA[2], rowsB[1]}); err != nil {
		s.Fatalf("Remove: %v", err)
	}
	s.wantIDs("Pending of shard A", s.pending(s.DB, shardA), msgIDs(msgsA[3:]))
	s.wantIDs("Pending of shard B", s.pending(s.DB, shardB), nil)
}

// The writes use the Execer given: rolled back with the caller's
// transaction, they leave the rows pending.
func testTransaction(s *suite) {
	key, _, shard, _ := s.keys()
	msgs := s.add(key, 3, 10)
	rows := s.pending(s.DB, shard)
	tx, err := s.DB.BeginTx(s.ctx, nil)
	if err != nil {
		s.Fatal(err)
	}
	if err := s.Source.Delivered(s.ctx, tx, rows[:1]); err != nil {
		s.Fatal(err)
	}
	if err := s.Source.Remove(s.ctx, tx, rows[1:2]); err != nil {
		s.Fatal(err)
	}
	if err := s.Source.Failed(s.ctx, tx, rows[2:], "x"); err != nil {
		s.Fatal(err)
	}
	s.wantIDs("Pending within the transaction", s.pending(tx, shard), msgIDs(msgs[2:]))
	if err := tx.Rollback(); err != nil {
		s.Fatal(err)
	}
	after := s.pending(s.DB, shard)
	s.wantIDs("Pending after rollback", after, msgIDs(msgs))
	if after[2].Attempts != 0 {
		s.Fatalf("attempts %d after a rolled back Failed, want 0", after[2].Attempts)
	}
}

// Failed counts one more attempt per call and keeps the rows pending.
func testFailed(s *suite) {
	key, _, shard, _ := s.keys()
	msgs := s.add(key, 3, 10)
	rows := s.pending(s.DB, shard)
	long := string(bytes.Repeat([]byte("e"), 5000))
	for range 2 {
		if err := s.Source.Failed(s.ctx, s.DB, rows[1:], long); err != nil {
			s.Fatalf("Failed with a %d-byte reason: %v", len(long), err)
		}
	}
	after := s.pending(s.DB, shard)
	s.wantIDs("Pending after Failed", after, msgIDs(msgs))
	if got := []int{after[0].Attempts, after[1].Attempts, after[2].Attempts}; !slices.Equal(got, []int{0, 2, 2}) {
		s.Fatalf("attempts %v, want [0 2 2]", got)
	}
}

// Backlog counts every shard's pending rows and gives the oldest's
// creation time, zero when none is pending.
func testBacklog(s *suite) {
	n, oldest, err := s.Source.Backlog(s.ctx, s.DB)
	if err != nil || n != 0 || !oldest.IsZero() {
		s.Fatalf("Backlog of nothing = %d, %v, %v; want 0 and a zero time", n, oldest, err)
	}
	a, b, shardA, _ := s.keys()
	s.add(a, 3, 10)
	s.add(b, 2, 10)
	n, oldest, err = s.Source.Backlog(s.ctx, s.DB)
	if err != nil || n != 5 || oldest.IsZero() || time.Since(oldest).Abs() > time.Hour {
		s.Fatalf("Backlog = %d, %v, %v; want 5 and about now", n, oldest, err)
	}
	if err := s.Source.Delivered(s.ctx, s.DB, s.pending(s.DB, shardA)); err != nil {
		s.Fatal(err)
	}
	if n, _, err := s.Source.Backlog(s.ctx, s.DB); err != nil || n != 2 {
		s.Fatalf("Backlog after delivering 3 = %d, %v; want 2", n, err)
	}
}

// A relay.Purger deletes kept rows delivered before the time given, at most
// limit per call.
func testPurge(s *suite) {
	p, ok := s.Source.(relay.Purger)
	if !ok || !s.Keeps {
		s.Skip("the source keeps no delivered rows")
	}
	key, _, shard, _ := s.keys()
	s.add(key, 3, 10)
	if err := s.Source.Delivered(s.ctx, s.DB, s.pending(s.DB, shard)); err != nil {
		s.Fatal(err)
	}
	if n, err := p.Purge(s.ctx, s.DB, time.Now().Add(-time.Hour), 100); err != nil || n != 0 {
		s.Fatalf("Purge of rows delivered before an hour ago = %d, %v; want 0", n, err)
	}
	if n, err := p.Purge(s.ctx, s.DB, time.Now().Add(time.Hour), 2); err != nil || n != 2 {
		s.Fatalf("Purge with limit 2 = %d, %v; want 2", n, err)
	}
	if n, err := p.Purge(s.ctx, s.DB, time.Now().Add(time.Hour), 100); err != nil || n != 1 {
		s.Fatalf("Purge of the rest = %d, %v; want 1", n, err)
	}
}

// relay.Changes lists the rows above a seq and within gaps, in seq order,
// up to a limit, and tells the newest seq.
func testChanges(s *suite) {
	c, ok := s.Source.(relay.Changes)
	if !ok {
		s.Skip("the source does not implement relay.Changes")
	}
	arrivals := func(after int64, gaps []relay.SeqRange, limit int) []relay.Arrival {
		s.Helper()
		as, err := c.Arrivals(s.ctx, s.DB, after, gaps, limit)
		if err != nil {
			s.Fatalf("Arrivals(%d, %v, %d): %v", after, gaps, limit, err)
		}
		return as
	}
	if as := arrivals(0, nil, 100); len(as) != 0 {
		s.Fatalf("Arrivals of nothing = %v; want none", as)
	}
	if n, err := c.Newest(s.ctx, s.DB); err != nil || n != 0 {
		s.Fatalf("Newest of nothing = %d, %v; want 0", n, err)
	}
	a, b, shardA, shardB := s.keys()
	s.add(a, 2, 10)
	s.add(b, 2, 10)
	ra, rb := s.pending(s.DB, shardA), s.pending(s.DB, shardB)
	all := []relay.Arrival{{Seq: ra[0].Seq, Shard: shardA}, {Seq: ra[1].Seq, Shard: shardA},
		{Seq: rb[0].Seq, Shard: shardB}, {Seq: rb[1].Seq, Shard: shardB}}
	if as := arrivals(0, nil, 100); !slices.Equal(as, all) {
		s.Fatalf("Arrivals(0) = %v; want %v", as, all)
	}
	if as := arrivals(ra[1].Seq, nil, 100); !slices.Equal(as, all[2:]) {
		s.Fatalf("Arrivals(%d) = %v; want %v", ra[1].Seq, as, all[2:])
	}
	gaps := []relay.SeqRange{{From: ra[0].Seq, To: ra[0].Seq}, {From: rb[0].Seq, To: rb[0].Seq}}
	if as, want := arrivals(rb[1].Seq, gaps, 100), []relay.Arrival{all[0], all[2]}; !slices.Equal(as, want) {
		s.Fatalf("Arrivals(%d, %v) = %v; want %v", rb[1].Seq, gaps, as, want)
	}
	if n, err := c.Newest(s.ctx, s.DB); err != nil || n != rb[1].Seq {
		s.Fatalf("Newest = %d, %v; want %d", n, err, rb[1].Seq)
	}
	if as := arrivals(0, nil, 3); !slices.Equal(as, all[:3]) {
		s.Fatalf("Arrivals(0, limit 3) = %v; want %v", as, all[:3])
	}
}

// relay.Handover reads what Arrivals lists as whole rows, as Pending
// returns them, within a limit of rows and of bytes.
func testHandover(s *suite) {
	h, ok := s.Source.(relay.Handover)
	if !ok {
		s.Skip("the source does not implement relay.Handover")
	}
	arrivalsOf := func(after int64, gaps []relay.SeqRange, shards []int, limit relay.Limit) []relay.Row {
		s.Helper()
		rows, err := h.ArrivalRows(s.ctx, s.DB, after, gaps, shards, limit)
		if err != nil {
			s.Fatalf("ArrivalRows(%d, %v, %v, %v): %v", after, gaps, shards, limit, err)
		}
		return rows
	}
	arrivals := func(after int64, gaps []relay.SeqRange, limit relay.Limit) []relay.Row {
		s.Helper()
		return arrivalsOf(after, gaps, nil, limit)
	}
	if rows := arrivals(0, nil, relay.Limit{Rows: 100}); len(rows) != 0 {
		s.Fatalf("ArrivalRows of nothing = %v; want none", ids(rows))
	}
	a, b, shardA, shardB := s.keys()
	s.add(a, 2, 10)
	s.add(b, 2, 10)
	ra, rb := s.pending(s.DB, shardA), s.pending(s.DB, shardB)
	all := append(slices.Clone(ra), rb...)
	same := func(what string, got, want []relay.Row) {
		s.Helper()
		s.wantIDs(what, got, ids(want))
		for i, r := range got {
			w := want[i]
			if r.Seq != w.Seq || r.Shard != w.Shard || r.Topic != w.Topic || string(r.Key) != string(w.Key) ||
				string(r.Value) != string(w.Value) || len(r.Headers) != len(w.Headers) ||
				!r.CreatedAt.Equal(w.CreatedAt) || r.Attempts != w.Attempts {
				s.Fatalf("%s: row %d = %+v; Pending returned %+v", what, i, r, w)
			}
		}
	}
	same("ArrivalRows(0)", arrivals(0, nil, relay.Limit{Rows: 100}), all)
	same("ArrivalRows after the second row", arrivals(ra[1].Seq, nil, relay.Limit{Rows: 100}), all[2:])
	gaps := []relay.SeqRange{{From: ra[0].Seq, To: ra[0].Seq}, {From: rb[0].Seq, To: rb[0].Seq}}
	same("ArrivalRows of gaps", arrivals(rb[1].Seq, gaps, relay.Limit{Rows: 100}), []relay.Row{all[0], all[2]})
	same("ArrivalRows, limit 3 rows", arrivals(0, nil, relay.Limit{Rows: 3}), all[:3])
	same("ArrivalRows, limit 1 byte", arrivals(0, nil, relay.Limit{Rows: 100, Bytes: 1}), all[:1])
	// Of shards not listed, only seqs and shards: another relay reads them.
	for _, shards := range [][]int{{shardA}, {}} {
		got := arrivalsOf(0, nil, shards, relay.Limit{Rows: 100})
		if len(got) != len(all) {
			s.Fatalf("ArrivalRows of shards %v listed %d rows; want all %d", shards, len(got), len(all))
		}
		for i, r := range got {
			if r.Seq != all[i].Seq || r.Shard != all[i].Shard {
				s.Fatalf("ArrivalRows of shards %v: row %d is seq %d of shard %d; want seq %d of shard %d",
					shards, i, r.Seq, r.Shard, all[i].Seq, all[i].Shard)
			}
			if slices.Contains(shards, r.Shard) {
				same(fmt.Sprintf("ArrivalRows of shards %v, row %d", shards, i), got[i:i+1], all[i:i+1])
			} else if len(r.Value) > 0 || len(r.Key) > 0 || len(r.Headers) > 0 {
				s.Fatalf("ArrivalRows of shards %v: row %d of shard %d came whole; want only its seq and shard", shards, i, r.Shard)
			}
		}
	}
}
