package testbed

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// TCPUserTimeout reads TCP_USER_TIMEOUT, in milliseconds, from c's socket:
// what the kernel will wait for our data to be acknowledged before it aborts
// the connection. 0 is the kernel's default (no such bound).
func TCPUserTimeout(t interface {
	Helper()
	Fatal(args ...any)
}, c syscall.Conn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}
