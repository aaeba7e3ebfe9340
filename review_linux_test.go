//go:build linux

package linger

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// TestOutOfDescriptorsAfterInlineDrain: when Close's first drain has
// already read and discarded a pending request and the duplicate then
// fails for want of a descriptor, the plain close's report still counts
// those bytes in Discarded: they were read off the peer's connection and
// thrown away.
func TestOutOfDescriptorsAfterInlineDrain(t *testing.T) {
	h := newHarness(t, Config{}, false)
	srv, cli := pair(t, listen(t), nil)
	if _, err := cli.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	waitReadable(t, srv, false)
	var fd int
	rc, _ := srv.SyscallConn()
	rc.Control(func(s uintptr) { fd = int(s) })
	restore := spareDescriptors(t, fd, 0)
	err := h.Close(srv)
	restore()
	if err != nil {
		t.Errorf("Close = %v, want nil: the connection was ours to close", err)
	}
	r := h.next(t, 5*time.Second)
	if r.Outcome != Plain || !errors.Is(r.Err, syscall.EMFILE) || r.Discarded != 100 {
		t.Errorf("report %v %v, discarded %d; want plain for EMFILE, 100 discarded by the first drain", r.Outcome, r.Err, r.Discarded)
	}
	if s := h.Stats(); s.Outcomes[Plain] != 1 {
		t.Errorf("%d plain closes counted, want 1", s.Outcomes[Plain])
	}
}
