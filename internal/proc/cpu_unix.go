//go:build unix

package proc

import (
	"time"

	"golang.org/x/sys/unix"
)

// CPUTime is the CPU time the whole process has used, user and system. On a
// shared machine it is steadier than the wall time, which also counts what
// other processes take.
func CPUTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
