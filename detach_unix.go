//go:build unix

package linger

import (
	"errors"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// detachFD takes the socket under tcp as a new descriptor of its own.
//
// The order matters. The duplicate comes first, so that closing tcp's
// descriptor afterwards releases only a reference: the kernel closes a
// socket when its last descriptor goes, so no FIN or RST leaves because of
// that close. shutdown(SHUT_WR) acts on the socket, not on a descriptor: it
// queues the FIN behind the bytes already written, which still go out. Only
// then is tcp closed, which wakes any goroutine blocked in its Read or Write
// with net.ErrClosed, and from then on the duplicate is the only way to the
// socket.
func detachFD(tcp *net.TCPConn) (int, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	err = rc.Control(func(s uintptr) {
		// F_DUPFD_CLOEXEC, not dup(2): the duplicate must not leak into
		// child processes started while it lingers.
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		// Control fails only if tcp is already closed.
		return -1, errTaken
	}
	if dupErr != nil {
		// Typically EMFILE: no descriptor to spare, so no lingering.
		return -1, os.NewSyscallError("fcntl", dupErr)
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		// ENOTCONN: the peer already reset the connection.
		unix.Close(fd)
		return -1, os.NewSyscallError("shutdown", err)
	}
	if err := tcp.Close(); err != nil {
		// Another goroutine closed tcp between Control and here: it owns the
		// close, and the duplicate must go without a trace.
		unix.Close(fd)
		if errors.Is(err, net.ErrClosed) {
			return -1, errTaken
		}
		return -1, err
	}
	return fd, nil
}

// detachConn is detachFD for the portable backend: the socket comes back as
// a net.Conn on the runtime's poller.
func detachConn(tcp *net.TCPConn) (net.Conn, error) {
	fd, err := detachFD(tcp)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "linger")
	defer f.Close() // net.FileConn made its own duplicate
	return net.FileConn(f)
}
