package halfmsg

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// idGen makes the UUIDv7 of a message sent without an id, in the format the
// broker gives one (RFC 9562, as github.com/google/uuid's NewV7: 48 bits of
// Unix milliseconds, 12 bits of sub-millisecond time that never go back, 62
// random bits), with the standard library only. The Producer makes ids
// itself so that the ledger row can be written while the prepare is in
// flight. It is safe for concurrent use.
type idGen struct {
	now  func() time.Time
	mu   sync.Mutex
	last int64 // the last timestamp given out, in 1/4096 ms
}

// next returns a new id, lowercase 8-4-4-4-12 hex.
func (g *idGen) next() string {
	t := g.now()
	ts := t.UnixMilli()<<12 | int64(t.Nanosecond()%1e6)*4096/1e6
	g.mu.Lock()
	// Ids of one producer sort in the order they were made, even when the
	// clock stands still or steps back.
	if ts <= g.last {
		ts = g.last + 1
	}
	g.last = ts
	g.mu.Unlock()
	var b [16]byte
	// crypto/rand.Read never fails (it crashes the program instead).
	_, _ = rand.Read(b[8:])
	ms := ts >> 12
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = 0x70 | byte(ts>>8)&0x0f // version 7
	b[7] = byte(ts)
	b[8] = b[8]&0x3f | 0x80 // variant 10
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
