//go:build !unix

package proc

import "time"

// CPUTime is the CPU time the whole process has used; 0 where it is not
// known.
func CPUTime() time.Duration { return 0 }
