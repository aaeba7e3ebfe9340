//go:build linux

package lab

import (
	"net"

	"golang.org/x/sys/unix"
)

// unreadBytes returns the bytes received on c that the application has not
// read (SIOCINQ), which a close throws away; -1 if unknown.
func unreadBytes(c *net.TCPConn) int64 {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	rc.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err == nil {
			n = v
		}
	})
	return int64(n)
}
