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
	// stop ends e at once with outcome o (and err in its Report) and
	// releases it before returning; it runs with Closer.mu held. With
	// ErrMaxQueued the socket is aborted, so that the kernel frees its send
	// queue at once.
	stop(e *entry, o Outcome, err error)
	// closeNow closes a detached handle that was never started.
	closeNow(h handle)
}

// handle is a detached socket: a descriptor for the Linux event loop, a
// net.Conn for the portable backend. The event loop also reads, before it
// takes the Closer's lock, where the socket's acknowledgements stand.
type handle struct {
	fd     int
	conn   net.Conn
	queued int64  // bytes of ours, FIN included, not yet acknowledged (0: unknown)
	acked  uint64 // tcpi_bytes_acked
}

var errTaken = errors.New("linger: connection closed concurrently")

// closedError is returned by detach when it closed the caller's connection
// and then found it could not linger: the socket is gone, and the
// connection ended with outcome (and err, for Plain).
type closedError struct {
	outcome Outcome
	err     error
}

func (e *closedError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return "linger: connection already ended: " + e.outcome.String()
}

func (e *closedError) Unwrap() error { return e.err }

// entry is one lingering connection. All its fields are guarded by
// Closer.mu. Its size is the per-socket cost of lingering, so fields are
// ordered to pack.
type entry struct {
	links [3]link // on the Closer's age list, its peer's list, and the list of entries holding queued bytes
	addr  netip.AddrPort

	// Clocks, in nanoseconds since Closer.epoch.
	start      int64
	deadline   int64 // when the backend next looks at the entry
	hard       int64 // start + MaxHold
	lastActive int64 // the peer last sent or acknowledged bytes

	discarded int64
	queued    int64    // bytes of ours not yet acknowledged, FIN included, last seen (Linux)
	acked     uint64   // the peer's cumulative acknowledged bytes, last seen (Linux)
	ackedEnd  uint64   // acked once every byte of ours is, not counting the FIN (Linux)
	conn      net.Conn // portable backend
	fd        int32    // Linux event loop
	heapIdx   int32    // position in the Linux event loop's timer heap
	released  bool
	draining  bool // the event loop is reading from fd without Closer.mu
}
