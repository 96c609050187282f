package relaytest

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/relay"
)

// Env is one fresh source for one subtest.
type Env struct {
	// Source is the implementation under test.
	Source relay.Source
	// DB holds the source's rows; it starts with none.
	DB *sql.DB
	// Shards is the shard count Add spreads messages over
	// (txmsg.Shard(key, id, Shards)); at least 2.
	Shards int
	// Add makes msgs deliverable in the order given: each gets a higher Seq
	// than the one before. The suite sets every ID, topic and key.
	Add func(ctx context.Context, msgs ...txmsg.Message) error
	// Keeps says Delivered keeps rows for relay.Purger to delete later; the
	// Purge subtest runs only then.
	Keeps bool
}

// suite is one subtest's environment.
type suite struct {
	*testing.T
	Env
	ctx  context.Context
	next int // numbers message IDs, unique in the subtest's fresh Env
}

// Run runs the suite; newEnv gives each subtest a fresh Env. The subtests
// run in parallel, so newEnv must be safe for concurrent use.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	tests := []struct {
		name string
		fn   func(s *suite)
	}{
		{"Name", testName},
		{"PendingInSeqOrder", testPendingOrder},
		{"PendingLimits", testPendingLimits},
		{"DeliveredAndRemoveTakeRowsOut", testTakeOut},
		{"WritesGoThroughTheCallersTransaction", testTransaction},
		{"FailedCountsAttempts", testFailed},
		{"Backlog", testBacklog},
		{"Purge", testPurge},
		{"Changes", testChanges},
		{"Handover", testHandover},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newEnv(t)
			if env.Shards < 2 {
				t.Fatalf("relaytest: Env.Shards %d: want at least 2", env.Shards)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			tt.fn(&suite{T: t, Env: env, ctx: ctx})
		})
	}
}

// add adds n messages of key with values of size bytes and returns them
// with their IDs.
func (s *suite) add(key string, n, size int) []txmsg.Message {
	s.Helper()
	msgs := make([]txmsg.Message, n)
	for i := range msgs {
		s.next++
		msgs[i] = txmsg.Message{
			ID:      "relaytest-" + strconv.Itoa(s.next),
			Topic:   "relaytest",
			Key:     []byte(key),
			Value:   bytes.Repeat([]byte{byte('a' + i%26)}, size),
			Headers: []txmsg.Header{{Key: "i", Value: []byte(strconv.Itoa(i))}},
		}
	}
	if err := s.Add(s.ctx, msgs...); err != nil {
		s.Fatalf("add %d messages: %v", n, err)
	}
	return msgs
}

// keys returns two keys on different shards, and their shards.
func (s *suite) keys() (a, b string, shardA, shardB int) {
	a, shardA = "key-a", txmsg.Shard([]byte("key-a"), "", s.Shards)
	for i := 0; ; i++ {
		b = "key-b" + strconv.Itoa(i)
		if shardB = txmsg.Shard([]byte(b), "", s.Shards); shardB != shardA {
			return a, b, shardA, shardB
		}
	}
}

// pending returns the pending rows of shard, up to 1000.
func (s *suite) pending(q relay.Querier, shard int) []relay.Row {
	s.Helper()
	rows, err := s.Source.Pending(s.ctx, q, shard, relay.Limit{Rows: 1000})
	if err != nil {
		s.Fatalf("Pending(shard %d): %v", shard, err)
	}
	return rows
}

// ids returns the IDs of rows.
func ids(rows []relay.Row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}

// msgIDs returns the IDs of msgs.
func msgIDs(msgs []txmsg.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func (s *suite) wantIDs(what string, got []relay.Row, want []string) {
	s.Helper()
	g := ids(got)
	if fmt.Sprint(g) != fmt.Sprint(want) {
		s.Fatalf("%s: ids %v, want %v", what, g, want)
	}
}
