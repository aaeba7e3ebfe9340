package probe

import (
	"context"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tcpClose is TCP_CLOSE of the kernel's tcp_states.h.
const tcpClose = 7

// settle waits, up to d, until the server has acknowledged every byte
// written on conn or reset the connection, and reports whether it reset
// it. The probe's last records may still be on their way when it stops
// sending; a server whose socket is gone answers them with an RST that no
// later read would report (after a FIN, Linux keeps returning EOF), so the
// socket's own state is asked: TCP_INFO's state is CLOSE only after a reset
// while this side has not closed, and SIOCOUTQ counts the bytes the server
// has not acknowledged.
func settle(ctx context.Context, conn net.Conn, d time.Duration) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	deadline := time.Now().Add(d)
	for {
		var closed, drained bool
		cerr := rc.Control(func(fd uintptr) {
			info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				return
			}
			closed = info.State == tcpClose
			outq, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
			drained = err == nil && outq == 0
		})
		if cerr != nil {
			return false
		}
		if closed || drained || !time.Now().Before(deadline) || ctx.Err() != nil {
			return closed
		}
		time.Sleep(2 * time.Millisecond)
	}
}
