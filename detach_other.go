//go:build !unix && !windows

package linger

import (
	"errors"
	"net"
)

// detachConn is not possible here: connections close plainly.
func detachConn(tcp *net.TCPConn) (net.Conn, error) {
	return nil, errors.New("linger: lingering is not supported on this system")
}
