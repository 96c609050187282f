package migrations

import (
	"errors"
	"io"

	"github.com/golang-migrate/migrate/v4/database"
)

// recorder is golang-migrate's database driver, watched: golang-migrate
// marks each migration's target version dirty, runs the file, then marks it
// clean, so the calls tell exactly which migrations ran, also when another
// migrator ran some of them first.
type recorder struct {
	database.Driver
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

// failed returns the version the migration in flight leads to, if one is.
func (r *recorder) failed() (int, bool) { return r.running, r.inFlight }
