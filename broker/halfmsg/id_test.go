package halfmsg

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestBrokerProducerIDsAreUUIDv7: the ids the Producer makes for messages
// without one have the broker's format (a UUIDv7 with its Unix
// milliseconds), are unique and sort in the order they were made, also when
// the clock stands still or steps back.
func TestBrokerProducerIDsAreUUIDv7(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 1, 10, 0, 0, 123_456_789, time.UTC)
	clock := []time.Time{at, at, at.Add(-time.Second), at.Add(time.Millisecond)}
	i := 0
	g := &idGen{now: func() time.Time { t := clock[i%len(clock)]; i++; return t }}
	var ids []string
	for range 4 * len(clock) {
		ids = append(ids, g.next())
	}
	if !slices.IsSorted(ids) {
		t.Fatalf("ids out of order: %q", ids)
	}
	if len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Fatalf("repeated ids: %q", ids)
	}
	for _, id := range ids {
		u, err := uuid.Parse(id)
		if err != nil || u.String() != id || u.Version() != 7 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("id %q: parsed %v (%v), version %d, variant %v; want a lowercase UUIDv7", id, u, err, u.Version(), u.Variant())
		}
	}
	u := uuid.MustParse(ids[0])
	if sec, nsec := u.Time().UnixTime(); time.Unix(sec, nsec).UnixMilli() != at.UnixMilli() {
		t.Fatalf("id %s carries %v, want the milliseconds of %v", ids[0], time.Unix(sec, nsec).UTC(), at)
	}
}
