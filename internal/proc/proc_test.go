package proc

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestOpenFDs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/self/fd is Linux's")
	}
	before := OpenFDs()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if got := OpenFDs(); got != before+1 {
		t.Errorf("%d descriptors with one more open, %d before", got, before)
	}
	f.Close()
	if got := OpenFDs(); got != before {
		t.Errorf("%d descriptors after closing it, %d before", got, before)
	}
}

func TestCPUTime(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("no getrusage")
	}
	start := CPUTime()
	for deadline := time.Now().Add(20 * time.Millisecond); time.Now().Before(deadline); {
	}
	if used := CPUTime() - start; used <= 0 {
		t.Errorf("CPUTime advanced by %v over 20 ms of spinning", used)
	}
}
