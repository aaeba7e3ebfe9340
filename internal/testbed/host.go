package testbed

import (
	"os"
	"runtime"
	"time"
)

// TB is the part of testing.TB the helpers here need, so that the lab and
// the benchmarks can use them outside tests.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
}

// RequireRoot skips t unless the process is root on Linux, saying what is
// skipped and why.
func RequireRoot(t TB, what string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("skipping %s: needs Linux network namespaces", what)
	}
	if os.Geteuid() != 0 {
		t.Skipf("skipping %s: needs root for network namespaces and nftables (CI runs as root)", what)
	}
}

// OpenFDs counts the process's open descriptors, or returns -1 where
// /proc/self/fd does not exist.
func OpenFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory's own descriptor
}

// WaitFDs waits up to 5 s for the process's descriptor count to drop back to
// before, and reports an error on t if it does not: a descriptor closed by
// another goroutine, or by the runtime, may take a moment to go.
func WaitFDs(t interface {
	Helper()
	Errorf(format string, args ...any)
}, before int) {
	t.Helper()
	if before < 0 {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := OpenFDs()
		if after <= before {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("descriptors: %d before, %d after", before, after)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
