//go:build windows

package linger

import (
	"errors"
	"net"
)

// detachConn on Windows keeps the caller's connection: Windows sockets cannot
// be duplicated within a process the way Unix descriptors can. The write
// side is shut down now; a goroutine still blocked in the caller's Read wakes
// only when lingering ends.
func detachConn(tcp *net.TCPConn) (net.Conn, error) {
	if err := tcp.CloseWrite(); err != nil {
		if errors.Is(err, net.ErrClosed) {
			return nil, errTaken
		}
		return nil, err
	}
	return tcp, nil
}
