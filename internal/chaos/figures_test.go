package chaos

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestChaosFiguresCountEveryViolation(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := func(topic string, p int32, off int64, key, id string) record {
		return record{topic: topic, partition: p, offset: off, key: key, id: id, time: t0.Add(time.Duration(off) * time.Second)}
	}
	ev := &evidence{
		orders: map[string]order{
			"a1": {topicOutbox, "a", 1, t0}, "a2": {topicOutbox, "a", 2, t0}, "a3": {topicOutbox, "a", 3, t0},
			"b1": {topicHalf, "b", 1, t0}, "b2": {topicHalf, "b", 2, t0},
			"d1": {topicDoomed, "d", 1, t0}, "d2": {topicDoomed, "d", 2, t0},
			"lost": {topicOutbox, "a", 4, t0}, "dead": {topicOutbox, "c", 1, t0},
		},
		logs: map[string][]record{
			// a2 again after a3 is a (stale) duplicate, not a reorder.
			topicOutbox: {rec(topicOutbox, 0, 0, "a", "a1"), rec(topicOutbox, 0, 1, "a", "a2"),
				rec(topicOutbox, 0, 2, "a", "a3"), rec(topicOutbox, 0, 3, "a", "a2"), rec(topicOutbox, 1, 0, "x", "rolled-back")},
			// b2 first: b1 is a reorder.
			topicHalf: {rec(topicHalf, 2, 0, "b", "b2"), rec(topicHalf, 2, 1, "b", "b1")},
			// A deleted incarnation's records, then the new topic's.
			topicDoomed: {rec(topicDoomed, 3, 0, "d", "d1"), rec(topicDoomed, 3, 0, "d", "d2")},
		},
		consumed: map[string]bool{topicOutbox: true, topicHalf: true},
		effects: map[string]effect{
			"a1": {topicOutbox, 0, 1, t0.Add(9 * time.Second)}, "a2": {topicOutbox, 0, 2, t0}, "a3": {topicOutbox, 0, 1, t0},
			"b2": {topicHalf, 2, 1, t0},
		},
		deadLettered:  map[string]bool{"dead": true},
		discarded:     map[string]bool{},
		consumerDLQ:   map[string]bool{"b1": true},
		pendingShards: 2,
	}
	f := ev.figures(slog.New(slog.DiscardHandler))
	want := Figures{Committed: 9, Delivered: 7, Lost: 2, Phantom: 1, Reorders: 1, Duplicates: 1, StaleDuplicates: 1, EffectsTwice: 1,
		Stalled: 2, MaxDelay: 9 * time.Second, DeadLettered: 1, ConsumerDLQ: 1}
	if f != want {
		t.Fatalf("figures\n got %v\nwant %v", f, want)
	}
	if f.OK() {
		t.Fatal("OK with violations")
	}
	// An unapplied message stalls its partition.
	delete(ev.effects, "a3")
	if f := ev.figures(slog.New(slog.DiscardHandler)); f.Unapplied != 1 || f.Stalled != 3 {
		t.Fatalf("unapplied %d, stalled %d; want 1 and 3", f.Unapplied, f.Stalled)
	}
}

func TestChaosFiguresLine(t *testing.T) {
	t.Parallel()
	f := Figures{Committed: 10, Delivered: 10, Duplicates: 2, MaxDelay: 1500 * time.Millisecond}
	line := f.String()
	for _, want := range []string{"committed=10 ", "lost=0 ", "phantom=0 ", "reorders=0 ", "duplicates=2 ",
		"effects_twice=0 ", "stalled=0 ", "max_delay=1.5s ", "ok=true"} {
		if !strings.Contains(line, want) {
			t.Fatalf("%q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "\n") || !f.OK() {
		t.Fatalf("%q: want one line, ok", line)
	}
}

func TestChaosParseKcat(t *testing.T) {
	t.Parallel()
	out := "1\t7\t1767323045000\tk2\ttxmsg-id=m2,txmsg-source=outbox\n" +
		"0\t3\t1767323044000\tk1\ttxmsg-source=half,txmsg-id=m1\n" +
		"0\t2\t1767323043000\t\t\n"
	recs, err := parseKcat("t", []byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].offset != 2 || recs[1].id != "m1" || recs[1].key != "k1" ||
		recs[2].id != "m2" || recs[2].partition != 1 || !recs[2].time.Equal(time.UnixMilli(1767323045000)) {
		t.Fatalf("records %+v", recs)
	}
	if _, err := parseKcat("t", []byte("garbage\n")); err == nil {
		t.Fatal("garbage: want an error")
	}
}
