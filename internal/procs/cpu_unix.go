//go:build unix

package procs

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time the process has used, user and system, all
// its threads.
func cpuTime() (time.Duration, bool) {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0, false
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano()), true
}
