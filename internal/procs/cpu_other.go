//go:build !unix

package procs

import "time"

// cpuTime cannot read the process's CPU time here: Govern leaves GOMAXPROCS
// alone.
func cpuTime() (time.Duration, bool) { return 0, false }
