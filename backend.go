package linger

import (
	"errors"
	"net"
	"net/netip"
)

// A backend holds lingering sockets: it drains them, enforces the deadlines
// and calls Closer.release when each ends.
type backend interface {
	// detach takes the socket away from tcp: on success the socket's write
	// side is shut down, tcp is closed, and the returned handle is the only
	// reference left. It returns errTaken if tcp was closed by someone else
	// in the meantime, in which case nothing was taken.
	detach(tcp *net.TCPConn) (handle, error)
	// newEntry wraps a handle in an entry; start begins lingering on it. Both
	// run with Closer.mu held.
	newEntry(h handle) *entry
	start(e *entry)
	// stop ends e at once with outcome o and releases it before returning;
	// it runs with Closer.mu held.
	stop(e *entry, o Outcome)
	// closeNow closes a detached handle that was never started.
	closeNow(h handle)
}

// handle is a detached socket: a descriptor for the Linux event loop, a
// net.Conn for the portable backend.
type handle struct {
	fd   int
	conn net.Conn
}

var errTaken = errors.New("linger: connection closed concurrently")

// entry is one lingering connection. All its fields are guarded by
// Closer.mu. Its size is the per-socket cost of lingering, so fields are
// ordered to pack.
type entry struct {
	prev, next         *entry // age list, oldest first
	peerPrev, peerNext *entry // the same peer's list, with MaxConnsPerIP
	addr               netip.AddrPort

	// Clocks, in nanoseconds since Closer.epoch.
	start      int64
	deadline   int64 // when the backend next looks at the entry
	hard       int64 // start + MaxHold
	lastActive int64 // the peer last sent or acknowledged bytes

	discarded int64
	acked     uint64   // the peer's cumulative acknowledged bytes, last seen
	conn      net.Conn // portable backend
	fd        int32    // Linux event loop
	heapIdx   int32    // position in the Linux event loop's timer heap
	released  bool
}

// tcpConn finds the *net.TCPConn under conn, or returns nil.
func tcpConn(conn net.Conn) *net.TCPConn {
	for i := 0; i < 8 && conn != nil; i++ { // a bound against a wrapper that returns itself
		switch v := conn.(type) {
		case *net.TCPConn:
			return v
		case *Conn:
			return v.TCPConn
		case interface{ NetConn() net.Conn }:
			conn = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}
