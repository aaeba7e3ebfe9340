package linger

import (
	"testing"
	"unsafe"
)

// TestEntrySize: an entry is the event loop's per-socket cost in Go memory;
// it fits the allocator's 128-byte size class, on 64-bit systems.
func TestEntrySize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the size is pinned for 64-bit systems")
	}
	if s := unsafe.Sizeof(entry{}); s > 128 {
		t.Errorf("entry is %d bytes, more than the 128-byte size class", s)
	}
}
