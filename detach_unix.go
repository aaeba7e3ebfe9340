//go:build unix

package linger

import (
	"errors"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// detachFD takes the socket under tcp as a new descriptor of its own.
//
// first, if not nil, runs on tcp's own descriptor before anything else. If
// it returns true, the socket has nothing left to linger for: the peer has
// closed or reset it and nothing it sent is left unread, and the plain
// close sends no RST, or the peer has sent more than its byte budget, and
// the RST that the unread bytes make the close send is the budget's end.
// detachFD then duplicates nothing and closes tcp plainly, and returns -1
// and a nil error.
//
// Otherwise the order matters. The duplicate comes first, so that closing
// tcp's descriptor afterwards releases only a reference: the kernel closes
// a socket when its last descriptor goes, so no FIN or RST leaves because
// of that close. Closing tcp next wakes any goroutine blocked in its Read or
// Write with net.ErrClosed (before the shutdown, so that a blocked Write
// cannot see EPIPE from it instead), and from then on the duplicate is the
// only way to the socket. shutdown(SHUT_WR) comes last: it acts on the
// socket, not on a descriptor, and queues the FIN behind the bytes already
// written, which still go out.
//
// Every step that can fail for want of resources comes before tcp is
// closed, so that on such a failure tcp is still open and its caller can
// close it plainly.
func detachFD(tcp *net.TCPConn, first func(fd int) bool) (int, error) {
	fd, err := dupFD(tcp, first)
	if err != nil {
		return -1, err
	}
	if fd < 0 {
		if err := tcp.Close(); err != nil {
			if errors.Is(err, net.ErrClosed) {
				// Closed by someone else since: the close is theirs.
				return -1, errTaken
			}
			return -1, &closedError{outcome: Plain, err: err}
		}
		return -1, nil
	}
	shutdownWrite := func() error { return unix.Shutdown(fd, unix.SHUT_WR) }
	if err := handOver(tcp, shutdownWrite, func() bool { return resetPending(fd) }); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// dupFD duplicates tcp's descriptor, unless first (if not nil), run on that
// descriptor just before, returns true: then it returns -1 and no error. It
// returns errTaken if tcp is already closed.
func dupFD(tcp *net.TCPConn, first func(fd int) bool) (int, error) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return -1, errTaken // SyscallConn fails only if tcp is closed
	}
	fd := -1
	var dupErr error
	err = rc.Control(func(s uintptr) {
		if first != nil && first(int(s)) {
			return
		}
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
	return fd, nil
}

// handOver closes tcp, whose socket another descriptor keeps, and then
// shuts down the socket's write side with shutdownWrite. On an error the
// caller still owns, and must close, its other descriptor; the error is
// errTaken if someone else closed tcp first (nothing was taken), or a
// *closedError once tcp is closed. reset (see resetPending) tells, when
// the connection turns out to have ended already, whether the peer reset
// it.
func handOver(tcp *net.TCPConn, shutdownWrite func() error, reset func() bool) error {
	if err := tcp.Close(); err != nil {
		// Another goroutine closed tcp between the duplication and here: it
		// owns the close, and the duplicate must go without a trace.
		if errors.Is(err, net.ErrClosed) {
			return errTaken
		}
		return err
	}
	if err := shutdownWrite(); err != nil {
		if errors.Is(err, syscall.ENOTCONN) {
			// The connection already ended. Nothing is left to linger
			// for, and closing sends nothing. Most often the peer closed
			// and then reset it, typically because we wrote after its
			// close: that is peer_closed. A peer that reset it without
			// closing first is peer_reset, as the event loop's first read
			// finds it.
			if reset() {
				return &closedError{outcome: PeerReset}
			}
			return &closedError{outcome: PeerClosed}
		}
		return &closedError{outcome: Plain, err: os.NewSyscallError("shutdown", err)}
	}
	return nil
}

// detachConn is detachFD for the portable backend: the socket comes back as
// a net.Conn on the runtime's poller. net.FileConn duplicates the descriptor
// once more, which can fail with EMFILE too, so it runs before tcp is
// closed.
func detachConn(tcp *net.TCPConn) (net.Conn, error) {
	fd, err := dupFD(tcp, nil)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "linger")
	conn, err := net.FileConn(f)
	f.Close() // net.FileConn made its own duplicate, or failed
	if err != nil {
		return nil, err
	}
	own, ok := conn.(*net.TCPConn)
	if !ok { // cannot happen: the descriptor is tcp's socket
		conn.Close()
		return nil, errors.New("linger: duplicate is not a TCP connection")
	}
	reset := func() bool {
		r := false
		if rc, err := own.SyscallConn(); err == nil {
			rc.Control(func(s uintptr) { r = resetPending(int(s)) })
		}
		return r
	}
	if err := handOver(tcp, own.CloseWrite, reset); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// resetPending says whether fd's socket still holds, unreported, the
// ECONNRESET of a reset from its peer. The kernel records it in the
// socket's error (SO_ERROR) when the RST arrives and hands it to the first
// read or write that follows, or to this getsockopt, which clears it. A
// peer that had closed before it reset leaves EPIPE there instead, since
// the connection was half-closed, or nothing if a read or write of the
// caller's already took the error.
func resetPending(fd int) bool {
	e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	return err == nil && syscall.Errno(e) == unix.ECONNRESET
}
