package consumer

import (
	"reflect"
	"testing"

	"github.com/segmentio/kafka-go"
)

// TestConsumerTrackerLowWatermark: with messages finished out of order,
// the commit point is the last offset below which all are finished.
func TestConsumerTrackerLowWatermark(t *testing.T) {
	t.Parallel()
	tr := newTracker()
	tp := tpKey{"t", 0}
	var es []*entry
	for _, off := range []int64{10, 11, 13, 14, 20} { // gaps, as after compaction
		es = append(es, tr.add(tp, off))
	}
	commitAt := func() []kafka.Message { return tr.pending() }
	tr.finish(es[1])
	tr.finish(es[3])
	if got := commitAt(); len(got) != 0 {
		t.Fatalf("pending %v before the first message finished", got)
	}
	tr.finish(es[0])
	want := []kafka.Message{{Topic: "t", Partition: 0, Offset: 11}}
	if got := commitAt(); !reflect.DeepEqual(got, want) {
		t.Fatalf("pending %v, want %v", got, want)
	}
	tr.committed(want)
	if got := commitAt(); len(got) != 0 {
		t.Fatalf("pending %v right after commit", got)
	}
	tr.finish(es[2])
	if got := commitAt(); len(got) != 1 || got[0].Offset != 14 {
		t.Fatalf("pending %v, want offset 14", got)
	}
	tr.finish(es[4])
	if got := commitAt(); len(got) != 1 || got[0].Offset != 20 {
		t.Fatalf("pending %v, want offset 20", got)
	}
}

func TestConsumerTraceParent(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":      true,
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more": true,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more": false,
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01":      false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01":      false,
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01":      false,
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01":      false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7":         false,
		"": false,
	}
	for s, want := range cases {
		if got := validTraceParent(s); got != want {
			t.Errorf("validTraceParent(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzConsumerTraceParent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("00-")
	f.Fuzz(func(t *testing.T, s string) {
		if validTraceParent(s) && len(s) < 55 {
			t.Fatalf("accepted short %q", s)
		}
	})
}
