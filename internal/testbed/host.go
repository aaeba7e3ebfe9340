package testbed

import (
	"os"
	"runtime"
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
