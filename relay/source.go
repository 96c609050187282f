package relay

import (
	"context"
	"database/sql"
	"time"

	"github.com/txmsg/txmsg"
)

// Row is one deliverable message as a Source stores it.
type Row struct {
	// Seq orders rows within a shard: delivery follows ascending Seq.
	Seq       int64
	ID        string
	Shard     int
	Topic     string
	Key       []byte
	Value     []byte
	Headers   []txmsg.Header
	CreatedAt time.Time
	// Attempts counts earlier deliveries Kafka refused for good.
	Attempts int
	// badHeaders is why the stored headers did not decode (ScanRows sets
	// it, with rawHeaders): such a row is dead-lettered as stored.
	badHeaders error
	rawHeaders []byte
}

// Limit bounds one round's batch: rows, and bytes of keys and values, which
// bound the engine's memory whatever the message sizes.
type Limit struct {
	Rows  int
	Bytes int64
}

// Querier reads rows: *sql.DB, *sql.Conn and *sql.Tx satisfy it.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Execer writes rows: *sql.DB, *sql.Conn and *sql.Tx satisfy it.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Source is a table of deliverable rows the Engine drains. Implementations
// are stateless SQL and safe for concurrent use; the Engine guarantees that
// one shard of a source is worked by one goroutine at a time.
type Source interface {
	// Name is the value of the txmsg-source header and the lease namespace
	// ("outbox", "half"); at most 16 characters.
	Name() string
	// Pending returns deliverable rows of shard in ascending Seq, at most
	// limit.Rows of them, stopping after the row that reaches limit.Bytes
	// (ScanRows does both).
	Pending(ctx context.Context, q Querier, shard int, limit Limit) ([]Row, error)
	// Delivered records that Kafka acknowledged rows (delete or mark them).
	Delivered(ctx context.Context, e Execer, rows []Row) error
	// Failed records one more refused attempt and its reason on rows.
	Failed(ctx context.Context, e Execer, rows []Row, reason string) error
	// Remove takes rows out of the source; the Engine calls it in the
	// transaction that copies them to txmsg_dead_letters.
	Remove(ctx context.Context, e Execer, rows []Row) error
	// Backlog counts pending rows and the creation time of the oldest
	// (zero when there are none), for metrics.
	Backlog(ctx context.Context, q Querier) (n int64, oldest time.Time, err error)
}

// Purger is a Source that keeps delivered rows for a retention and deletes
// them later, in batches of at most limit rows per statement. It returns how
// many rows it deleted.
type Purger interface {
	Purge(ctx context.Context, e Execer, deliveredBefore time.Time, limit int) (int64, error)
}

// Changes is a Source that can list cheaply the rows that arrived, so the
// Engine wakes an idle shard as soon as a row of it commits instead of when
// its poll interval ends. Seqs are taken when a row is inserted but become
// visible when its transaction commits, so a row can arrive below seqs
// already seen: the Engine asks again about the seqs it has not seen below
// the highest (gaps) for a while (see watchChanges).
type Changes interface {
	Source
	// Arrivals returns, in ascending seq, at most limit rows whose seq is
	// above after or within one of gaps (bounds included).
	Arrivals(ctx context.Context, q Querier, after int64, gaps []SeqRange, limit int) ([]Arrival, error)
	// Newest returns the highest seq the source holds (0 when none).
	Newest(ctx context.Context, q Querier) (int64, error)
}

// Handover is a Changes source whose probe can read the arriving rows
// whole: the Engine then hands them to their shards' workers, which publish
// them without reading them again (see handoff).
type Handover interface {
	Changes
	// ArrivalRows is Arrivals returning rows in ascending seq, at most
	// limit.Rows of them, stopping after the row that brings the keys and
	// values read to limit.Bytes (ScanRows does both). Rows of the shards
	// listed come whole (of every shard when shards is nil); of the others,
	// which another relay publishes, only Seq and Shard need be set.
	ArrivalRows(ctx context.Context, q Querier, after int64, gaps []SeqRange, shards []int, limit Limit) ([]Row, error)
}

// Busy is a Source that can list, with one statement whose cost does not
// grow with its rows, the shards holding rows that Pending may return. The
// Engine then asks every PollMax which shards of such a source are busy and
// wakes their workers, and an idle worker polls on its own only every
// busyFallback: an idle source costs one statement per PollMax, not one
// poll per shard. A Changes source needs none of this.
type Busy interface {
	Source
	// BusyShards returns, in any order, the shards below shards that hold
	// rows Pending may return.
	BusyShards(ctx context.Context, q Querier, shards int) ([]int, error)
}

// Strays is a Source that can tell cheaply whether it holds rows of a
// shard no lease covers (producers configured with more shards than the
// relay): such rows would never be delivered.
type Strays interface {
	// StrayShard returns a shard at or above shards that holds rows, or -1
	// when none does.
	StrayShard(ctx context.Context, q Querier, shards int) (int, error)
}

// SeqRange is the seqs from From to To, both included.
type SeqRange struct{ From, To int64 }

// Arrival is a row a Changes source listed: its seq and shard.
type Arrival struct {
	Seq   int64
	Shard int
}

// SingleRead is a Source whose Pending and PendingFrom each read with one
// statement. One statement sees one consistent snapshot by itself, so the
// Engine polls such a source without a transaction of its own (one round
// trip instead of four), unless the connections run at READ UNCOMMITTED.
type SingleRead interface {
	// SingleRead reports whether every poll is one statement.
	SingleRead() bool
}

// ConsistentRead is a Source whose Pending and PendingFrom, given the
// Engine's pool (a *sql.DB), see one consistent state by themselves: with one
// statement where that suffices, in a REPEATABLE READ transaction of their
// own where they read more. The Engine polls such a source on its pool, as a
// SingleRead one, unless the connections run at READ UNCOMMITTED: an idle
// poll then costs its reads alone, not the three statements of the Engine's
// transaction around them.
type ConsistentRead interface {
	// ConsistentRead reports whether Pending and PendingFrom keep one
	// consistent state by themselves on a pool.
	ConsistentRead() bool
}

// SingleMark is a Source whose Delivered marks some rows with one
// statement, which commits by itself under autocommit: the Engine then marks
// them without a transaction of its own (one round trip instead of three).
type SingleMark interface {
	// SingleMark reports whether Delivered marks n rows with one statement.
	SingleMark(n int) bool
}

// Seeker is a Source whose shards can be read from a seq on. A delivered
// row that is deleted stays in InnoDB's indexes, delete-marked, until purge
// removes it, and purge falls behind a fast drain: a poll from the start of
// the shard then steps over every row delivered since, so each poll costs
// more the bigger the backlog was. The Engine reads a Seeker's shard from
// below the first row it may still have to deliver (its floor), which it
// advances only past seqs that are final (see Head).
type Seeker interface {
	// PendingFrom is Pending restricted to rows with seq >= from.
	PendingFrom(ctx context.Context, q Querier, shard int, from int64, limit Limit) ([]Row, error)
	// Head returns the highest seq the source holds (0 when it holds none)
	// and the database's clock, read after it; and when the oldest
	// transaction running at that clock reading started (zero when none
	// ran). Every seq up to a head was taken before its clock reading; once
	// the oldest running transaction started after that reading (or none
	// runs), no transaction that could still commit a row with such a seq
	// is left, and the seqs up to the head are final. When it cannot tell,
	// it returns an oldest before any reading.
	// after is a seq the Engine knows was taken before the call: Head may
	// return it when the source holds nothing above it, and looks only
	// above it (rows delivered and deleted stay in the index until purge
	// removes them, so a look from the top of an emptied table steps over
	// every one).
	Head(ctx context.Context, db *sql.DB, after int64) (seq int64, at, oldestTx time.Time, err error)
}

// ShardBacklog is a Source that counts its backlog shard by shard, each from
// a seq on, so that a reading steps over only the rows delivered since the
// last one (on MySQL, delivered rows stay in the indexes until purge removes
// them, and purge falls far behind a drain). The Engine calls it instead of
// Backlog, with from[shard] below every row of the shard still pending or
// yet to commit.
type ShardBacklog interface {
	// BacklogFrom is Backlog over the shards 0 to len(from)-1, each from its
	// seq in from. lows[shard] is the shard's lowest pending seq read, or -1
	// when it had none.
	BacklogFrom(ctx context.Context, q Querier, from []int64) (n int64, oldest time.Time, lows []int64, err error)
}
