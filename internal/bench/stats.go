package bench

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Percentiles are the p50 and p99 of a sample.
type Percentiles struct {
	P50, P99 time.Duration
}

// percentiles sorts ds and returns its p50 and p99 (zero when empty).
func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	slices.Sort(ds)
	return Percentiles{P50: ds[len(ds)/2], P99: ds[min(len(ds)*99/100, len(ds)-1)]}
}

// Counters are server counters over a phase: what InnoDB and the handler
// did, to say where a phase's time went.
type Counters struct {
	// HistoryListMax is the longest InnoDB history list seen (undo records
	// not yet purged: deleted rows whose index entries scans still step
	// over).
	HistoryListMax int64
	// BufferPoolReads counts pages read from disk (buffer pool misses), and
	// BufferPoolReadRequests logical page reads.
	BufferPoolReads        int64
	BufferPoolReadRequests int64
	// HandlerReadKey counts index lookups, HandlerReadNext rows stepped
	// through in index order (a scan's length), HandlerDelete rows deleted.
	HandlerReadKey  int64
	HandlerReadNext int64
	HandlerDelete   int64
	// Commits counts the handler's commits (Handler_commit), Statements
	// the statements the server ran (Questions).
	Commits    int64
	Statements int64
}

// field returns the counter that the global status variable name feeds,
// or nil.
func (c *Counters) field(name string) *int64 {
	switch name {
	case "Innodb_buffer_pool_reads":
		return &c.BufferPoolReads
	case "Innodb_buffer_pool_read_requests":
		return &c.BufferPoolReadRequests
	case "Handler_read_key":
		return &c.HandlerReadKey
	case "Handler_read_next":
		return &c.HandlerReadNext
	case "Handler_delete":
		return &c.HandlerDelete
	case "Handler_commit":
		return &c.Commits
	case "Questions":
		return &c.Statements
	}
	return nil
}

// readStatus reads the global counters Counters holds.
func readStatus(ctx context.Context, db *sql.DB) (Counters, error) {
	var c Counters
	rows, err := db.QueryContext(ctx, `SHOW GLOBAL STATUS WHERE Variable_name IN
('Innodb_buffer_pool_reads', 'Innodb_buffer_pool_read_requests', 'Handler_read_key', 'Handler_read_next',
 'Handler_delete', 'Handler_commit', 'Questions')`)
	if err != nil {
		return c, fmt.Errorf("bench: read server status: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return c, fmt.Errorf("bench: read server status: %w", err)
		}
		if f := c.field(name); f != nil {
			*f, _ = strconv.ParseInt(value, 10, 64)
		}
	}
	return c, rows.Err()
}

// since returns the counters' growth from before to c; HistoryListMax is
// c's.
func (c Counters) since(before Counters) Counters {
	return Counters{
		HistoryListMax:         c.HistoryListMax,
		BufferPoolReads:        c.BufferPoolReads - before.BufferPoolReads,
		BufferPoolReadRequests: c.BufferPoolReadRequests - before.BufferPoolReadRequests,
		HandlerReadKey:         c.HandlerReadKey - before.HandlerReadKey,
		HandlerReadNext:        c.HandlerReadNext - before.HandlerReadNext,
		HandlerDelete:          c.HandlerDelete - before.HandlerDelete,
		Commits:                c.Commits - before.Commits,
		Statements:             c.Statements - before.Statements,
	}
}

var historyRE = regexp.MustCompile(`History list length (\d+)`)

// historyLength reads InnoDB's history list length, or -1 when the server
// does not show it (no PROCESS privilege, not InnoDB).
func historyLength(ctx context.Context, db *sql.DB) int64 {
	var typ, name, status string
	if err := db.QueryRowContext(ctx, "SHOW ENGINE INNODB STATUS").Scan(&typ, &name, &status); err != nil {
		return -1
	}
	m := historyRE.FindStringSubmatch(status)
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// String shows the counters on one line.
func (c Counters) String() string {
	return fmt.Sprintf("history list max %d, buffer pool reads %d of %d, handler read_key %d read_next %d delete %d, commits %d, statements %d",
		c.HistoryListMax, c.BufferPoolReads, c.BufferPoolReadRequests, c.HandlerReadKey, c.HandlerReadNext, c.HandlerDelete, c.Commits, c.Statements)
}
