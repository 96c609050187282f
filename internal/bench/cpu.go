package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc's CPU times: USER_HZ, 100 on every Linux
// architecture Go runs on.
const userHZ = 100

// cpuMark is the CPU time used so far by the machine and by one process,
// read from /proc (Linux): a phase's use is the difference of two marks.
type cpuMark struct {
	ok          bool
	busy, total int64 // all CPUs' ticks: not idle or waiting for I/O, and all
	proc        int64 // the process's ticks (user + system)
}

// markCPU reads the machine's CPU ticks and the sum of those of pids (none:
// this process); ok is false where /proc does not tell.
func markCPU(pids []int) cpuMark {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuMark{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuMark{}
	}
	var m cpuMark
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		m.total += n
		if i != 3 && i != 4 { // idle, iowait
			m.busy += n
		}
	}
	procs := []string{"self"}
	if len(pids) > 0 {
		procs = procs[:0]
		for _, pid := range pids {
			procs = append(procs, strconv.Itoa(pid))
		}
	}
	for _, p := range procs {
		t, ok := procTicks(p)
		if !ok {
			return cpuMark{}
		}
		m.proc += t
	}
	m.ok = true
	return m
}

// procTicks reads the CPU ticks (user + system) of process p ("self" or a
// pid).
func procTicks(p string) (int64, bool) {
	stat, err := os.ReadFile("/proc/" + p + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing one (utime and stime are the 14th and 15th).
	_, rest, ok := strings.Cut(string(stat), ") ")
	pf := strings.Fields(rest)
	if !ok || len(pf) < 13 {
		return 0, false
	}
	utime, _ := strconv.ParseInt(pf[11], 10, 64)
	stime, _ := strconv.ParseInt(pf[12], 10, 64)
	return utime + stime, true
}

// CPUUse is the CPU a phase used: how busy the whole machine was, and the
// CPU time of the process doing the phase's work.
type CPUUse struct {
	// Known is false where /proc does not tell (not Linux).
	Known bool
	// Busy is the share of all the machine's CPUs that was busy (0 to 1),
	// whoever used it: the database server and Kafka too when local.
	Busy float64
	// Proc is the CPU time of the processes measured: the relays', or the
	// benchmark's own for the naive loop and in-process relays.
	Proc time.Duration
}

// cpuSince returns the use from before to now; pids as for markCPU.
func cpuSince(before cpuMark, pids []int) CPUUse {
	after := markCPU(pids)
	if !before.ok || !after.ok || after.total <= before.total {
		return CPUUse{}
	}
	return CPUUse{
		Known: true,
		Busy:  float64(after.busy-before.busy) / float64(after.total-before.total),
		Proc:  time.Duration(after.proc-before.proc) * time.Second / userHZ,
	}
}

// perMessage shows u for n messages: the machine's busy share and the
// process's CPU per message, of the process named who.
func (u CPUUse) perMessage(who string, n int) string {
	if !u.Known || n <= 0 {
		return "CPU use unknown"
	}
	return fmt.Sprintf("machine %.0f%% busy, %s %.0f µs CPU per message", 100*u.Busy, who,
		float64(u.Proc.Microseconds())/float64(n))
}
