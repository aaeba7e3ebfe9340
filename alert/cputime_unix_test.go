//go:build unix

package alert_test

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time the process has used, user and system.
// Unlike wall-clock time it does not count the time other processes on a
// shared machine take the CPUs from the benchmark.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
