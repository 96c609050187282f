package migrations

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/golang-migrate/migrate/v4/database"
)

// recorder is golang-migrate's database driver, watched: golang-migrate
// marks each migration's target version dirty, runs the file, then marks it
// clean, so the calls tell exactly which migrations ran, also when another
// migrator ran some of them first.
type recorder struct {
	database.Driver
	// ctx ends a wait for the lock (see Lock).
	ctx context.Context
	// clean lists the versions reached, in order.
	clean []int
	// running is the version the migration in flight leads to, if inFlight.
	running  int
	inFlight bool
}

// SetVersion implements database.Driver.
func (r *recorder) SetVersion(version int, dirty bool) error {
	if err := r.Driver.SetVersion(version, dirty); err != nil {
		return err
	}
	if dirty {
		r.running, r.inFlight = version, true
		return nil
	}
	if r.inFlight && r.running == version {
		r.clean = append(r.clean, version)
	}
	r.inFlight = false
	return nil
}

// Run implements database.Driver. The driver's error quotes the whole
// file; the MySQL error alone says what failed, and the caller names the
// file.
func (r *recorder) Run(migration io.Reader) error {
	err := r.Driver.Run(migration)
	var de database.Error
	if errors.As(err, &de) && de.OrigErr != nil {
		return de.OrigErr
	}
	return err
}

// lockWait is how long a migrator waits for another one's lock: a long
// migration (0004 rebuilds tables) takes minutes on a large table, and the
// replicas of a deployment that all migrate at start must wait, not fail.
// golang-migrate's MySQL driver waits 10s per GET_LOCK.
const lockWait = 5 * time.Minute

// Lock implements database.Driver: the driver's lock, asked again while
// another migrator holds it, until lockWait has passed or ctx ends.
func (r *recorder) Lock() error {
	deadline := time.Now().Add(lockWait)
	for {
		err := r.Driver.Lock()
		if !errors.Is(err, database.ErrLocked) || time.Now().After(deadline) {
			return err
		}
		if r.ctx.Err() != nil {
			return errors.Join(err, r.ctx.Err())
		}
	}
}

// failed returns the version the migration in flight leads to, if one is.
func (r *recorder) failed() (int, bool) { return r.running, r.inFlight }
