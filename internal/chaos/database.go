package chaos

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"github.com/go-sql-driver/mysql"
)

// The business tables: orders are written with outbox messages, payments
// with half messages, effects by the consumers (one row per message; a
// second application of a message's effect increments applied).
const businessSchema = `CREATE TABLE chaos_orders (
  msg_id     VARCHAR(64) NOT NULL,
  topic      VARCHAR(64) NOT NULL,
  msg_key    VARCHAR(64) NOT NULL,
  n          INT UNSIGNED NOT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (msg_id)
) ENGINE=InnoDB;
CREATE TABLE chaos_payments LIKE chaos_orders;
CREATE TABLE chaos_effects (
  msg_id           VARCHAR(64)  NOT NULL,
  topic            VARCHAR(249) NOT NULL,
  record_partition INT          NOT NULL,
  record_offset    BIGINT       NOT NULL,
  applied          INT UNSIGNED NOT NULL,
  first_at         DATETIME(6)  NOT NULL,
  PRIMARY KEY (msg_id)
) ENGINE=InnoDB`

// database is the run's fresh database.
type database struct {
	base string // the server's DSN, as given
	name string
	dsn  string // DSN of the fresh database
	db   *sql.DB
}

// createDatabase creates a fresh database on the server of base, migrates
// it with the txmsg binary and creates the business tables.
func createDatabase(ctx context.Context, base, txmsg string) (*database, error) {
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		return nil, fmt.Errorf("chaos: parse DSN: %w", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	d := &database{base: base, name: "txmsg_chaos_" + hex.EncodeToString(b[:])}
	if err := d.adminExec(ctx, "CREATE DATABASE "+d.name); err != nil {
		return nil, err
	}
	cfg.DBName, cfg.ParseTime, cfg.Loc, cfg.MultiStatements = d.name, true, time.UTC, true
	d.dsn = cfg.FormatDSN()
	if d.db, err = sql.Open("mysql", d.dsn); err != nil {
		return nil, errors.Join(fmt.Errorf("chaos: open %s: %w", d.name, err), d.drop(ctx))
	}
	d.db.SetMaxOpenConns(64)
	d.db.SetMaxIdleConns(64)
	out, err := exec.CommandContext(ctx, txmsg, "migrate", "up", "--dsn", d.dsn).CombinedOutput()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("chaos: txmsg migrate up: %w: %s", err, out), d.close(ctx, false))
	}
	if _, err := d.db.ExecContext(ctx, businessSchema); err != nil {
		return nil, errors.Join(fmt.Errorf("chaos: create business tables: %w", err), d.close(ctx, false))
	}
	return d, nil
}

// adminExec runs one statement on the server, outside the fresh database.
func (d *database) adminExec(ctx context.Context, stmt string) error {
	admin, err := sql.Open("mysql", d.base)
	if err != nil {
		return fmt.Errorf("chaos: open %s: %w", d.base, err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("chaos: %s: %w", stmt, err)
	}
	return nil
}

// killConnections kills every connection of the fresh database's user to
// the fresh database except the one asking, as a failover or a network cut
// would, and returns how many it killed.
func (d *database) killConnections(ctx context.Context) (int, error) {
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("chaos: kill connections: %w", err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, `SELECT ID FROM information_schema.PROCESSLIST
WHERE DB = ? AND USER = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND ID <> CONNECTION_ID()`, d.name)
	if err != nil {
		return 0, fmt.Errorf("chaos: list connections: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("chaos: list connections: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	killed := 0
	for _, id := range ids {
		_, err := conn.ExecContext(ctx, "KILL "+strconv.FormatInt(id, 10))
		var me *mysql.MySQLError
		switch {
		case err == nil:
			killed++
		case errors.As(err, &me) && me.Number == 1094: // unknown thread: it ended meanwhile
		default:
			return killed, fmt.Errorf("chaos: kill connection %d: %w", id, err)
		}
	}
	return killed, nil
}

// close closes the pool and drops the database unless keep.
func (d *database) close(ctx context.Context, keep bool) error {
	err := d.db.Close()
	if keep {
		return err
	}
	return errors.Join(err, d.drop(ctx))
}

func (d *database) drop(ctx context.Context) error {
	return d.adminExec(ctx, "DROP DATABASE IF EXISTS "+d.name)
}
