package linger

import (
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT on conn if d is positive: the kernel
// then aborts the connection when data it sent stays unacknowledged for d.
// grpc-go sets it from its keepalive settings, but only on a *net.TCPConn,
// which connections accepted through Listener are not. The caller ignores
// the error: a socket that refuses the option still serves.
func setUserTimeout(conn *net.TCPConn, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, max(1, int(d/time.Millisecond)))
	})
	if err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt TCP_USER_TIMEOUT", serr)
}
