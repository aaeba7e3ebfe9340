//go:build linux

package linger

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/linger-go/linger/internal/connerr"
)

const tcpClose = 7 // TCP_CLOSE in the kernel's tcp_states.h

// tcpState returns the kernel's TCP state of c.
func tcpState(t *testing.T, c *net.TCPConn) uint8 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ti *unix.TCPInfo
	rc.Control(func(fd uintptr) { ti, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil {
		t.Fatal(err)
	}
	return ti.State
}

// TestOutOfDescriptors: with a single descriptor to spare, handing off a
// connection can duplicate it once but not twice (the portable backend
// needs two duplicates, the event loop an epoll descriptor when it
// starts). The connection must then close plainly, with a report and a
// count saying why, and Close must not fail.
func TestOutOfDescriptors(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{}, be.portable)
			// A free descriptor number below srv's.
			gap, err := os.Open(os.DevNull)
			if err != nil {
				t.Fatal(err)
			}
			srv, cli := pair(t, listen(t), nil)
			gap.Close()
			var fd int
			rc, _ := srv.SyscallConn()
			rc.Control(func(s uintptr) { fd = int(s) })

			restore := spareDescriptors(t, fd, 1)
			defer restore()

			err = h.Close(srv)
			restore()
			if err != nil {
				t.Errorf("Close = %v, want nil: the connection was ours to close", err)
			}
			r := h.next(t, 5*time.Second)
			if r.Outcome != Plain || !errors.Is(r.Err, syscall.EMFILE) {
				t.Errorf("report %v %v, want a plain close for EMFILE", r.Outcome, r.Err)
			}
			if n := h.Stats().Outcomes[Plain]; n != 1 {
				t.Errorf("%d plain closes counted, want 1", n)
			}
			cli.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := cli.Read(make([]byte, 1)); err == nil || connerr.IsTimeout(err) {
				t.Errorf("peer read %v, want the connection closed", err)
			}
		})
	}
}

// closeOutOfDescriptors closes c through h while the process has no
// descriptor to spare, so that a hand-off that tries to duplicate c's
// descriptor fails with EMFILE.
func closeOutOfDescriptors(t *testing.T, h *harness, c *net.TCPConn) error {
	t.Helper()
	var fd int
	rc, _ := c.SyscallConn()
	rc.Control(func(s uintptr) { fd = int(s) })
	restore := spareDescriptors(t, fd, 0)
	defer restore()
	return h.Close(c)
}

// spareDescriptors lowers RLIMIT_NOFILE to below, the number of a
// descriptor the test holds, and fills every free number below it but
// spare, so that the process can open spare more descriptors, and only
// below that one: the number it frees when closed cannot be reused. It
// skips the test if that cannot be arranged. restore undoes it; it may be
// called more than once.
func spareDescriptors(t *testing.T, below, spare int) (restore func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(below)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("cannot lower RLIMIT_NOFILE: %v", err)
	}
	var fillers []*os.File
	restore = func() {
		unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
		for _, f := range fillers {
			f.Close()
		}
		fillers = nil
	}
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				restore()
				t.Fatal(err)
			}
			break
		}
		fillers = append(fillers, f)
	}
	if len(fillers) < spare {
		restore()
		t.Skipf("premise: %d free descriptors below the connection's, want at least %d", len(fillers), spare)
	}
	for range spare {
		fillers[len(fillers)-1].Close()
		fillers = fillers[:len(fillers)-1]
	}
	return restore
}

// TestPeerAlreadyGone: a connection whose peer closed, and then reset the
// bytes we sent after its close (as a client does to a server's TLS
// close_notify after it has closed), has nothing left to linger for. That
// is a clean outcome, not a plain close with an error.
func TestPeerAlreadyGone(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{}, be.portable)
			srv, cli := pair(t, listen(t), nil)
			cli.Close()
			srv.Read(make([]byte, 1)) // EOF: the peer closed
			srv.Write([]byte("close_notify, say"))
			// Wait for the peer's reset to end the connection.
			deadline := time.Now().Add(5 * time.Second)
			for tcpState(t, srv) != tcpClose {
				if time.Now().After(deadline) {
					t.Fatal("the peer did not reset the connection")
				}
				time.Sleep(time.Millisecond)
			}
			if err := h.Close(srv); err != nil {
				t.Errorf("Close = %v", err)
			}
			r := h.next(t, 5*time.Second)
			if r.Outcome != PeerClosed || r.Err != nil {
				t.Errorf("report %v %v, want %v and no error", r.Outcome, r.Err, PeerClosed)
			}
		})
	}
}
