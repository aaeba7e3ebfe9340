package linger

import (
	"errors"
	"net"
	"net/netip"
)

// A backend holds lingering sockets: it drains them, enforces the deadlines
// and calls Closer.release when each ends.
type backend interface {
	// handOff takes the socket away from tcp and lingers on it. On success
	// the socket's write side is shut down, tcp is closed, and the backend
	// owns the socket: it has admitted it (Closer.admit) or, if there was
	// nothing left to linger for, already reported and closed it. It
	// returns errTaken if tcp was closed by someone else in the meantime
	// (nothing was taken), a *closedError if tcp is closed but the socket
	// could not linger, or another error if tcp is still open and its
	// caller must close it plainly; that error is a *drainedError if
	// handOff had already discarded bytes of the peer's.
	//
	// budget is the byte budget as it stands (Closer.budget), for what
	// handOff drains before it takes Closer.mu.
	handOff(tcp *net.TCPConn, addr netip.AddrPort, budget int64) error
	// stop ends e at once with outcome o (and err in its Report) and
	// releases it before returning; it runs with Closer.mu held. With
	// ErrMaxQueued the socket is aborted, so that the kernel frees its send
	// queue at once.
	stop(e *entry, o Outcome, err error)
	// shutdown ends the backend's own goroutines once nothing lingers; it
	// runs with Closer.mu held, after Closer.down is set.
	shutdown()
	// stalled says whether e, which holds queued bytes and has no
	// progressed flag, has had none of them acknowledged since its queue
	// was last measured (entry.queued); it runs with Closer.mu held. Only
	// the Linux event loop, which measures send queues, is ever asked.
	stalled(e *entry) bool
}

var errTaken = errors.New("linger: connection closed concurrently")

// closedError is returned by handOff when it closed the caller's connection
// and then found it could not linger: the socket is gone, and the
// connection ended with outcome (and err, for Plain).
type closedError struct {
	outcome   Outcome
	err       error
	discarded int64 // bytes handOff read and discarded before it failed
}

func (e *closedError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return "linger: connection already ended: " + e.outcome.String()
}

func (e *closedError) Unwrap() error { return e.err }

// drainedError is returned by handOff, wrapping err, when tcp is still open
// but handOff had already read and discarded n bytes the peer sent: the
// plain close that follows counts them, since the peer's bytes are gone
// either way.
type drainedError struct {
	n   int64
	err error
}

func (e *drainedError) Error() string { return e.err.Error() }

func (e *drainedError) Unwrap() error { return e.err }

// entry is one lingering connection. All its fields are guarded by
// Closer.mu. Its size is the per-socket cost of lingering, so fields are
// ordered to pack into 128 bytes, and it carries nothing of the portable
// backend, whose goroutine per connection holds the connection itself.
type entry struct {
	links [3]link // on the Closer's age list, its peer's list, and the list of entries holding queued bytes
	addr  netip.AddrPort

	// Clocks, in nanoseconds since Closer.epoch.
	start      int64 // the hard cap, MaxHold, counts from here
	deadline   int64 // when the event loop next looks at the entry
	lastActive int64 // the peer last sent or acknowledged bytes

	discarded int64
	queued    int32 // bytes of ours not yet acknowledged, FIN included, last seen (Linux; SIOCOUTQ is an int)
	fd        int32 // the socket (Linux event loop); the portable backend's goroutine holds its own
	heapIdx   int32 // position in the Linux event loop's timer heap
	released  bool
	draining  bool  // the event loop is reading from fd without Closer.mu
	shard     uint8 // the Linux event loop's shard that holds it
	flags     entryFlags
}

// entryFlags are an entry's rarer facts, in one byte so that the entry stays
// in the 128-byte size class.
type entryFlags uint8

const (
	// outqUnknown: no SIOCOUTQ reading has succeeded yet, so queued says
	// nothing (Linux event loop).
	outqUnknown entryFlags = 1 << iota
	// clamped: its receive buffer was clamped under pressure.
	clamped
	// progressed: the peer has acknowledged bytes of ours since the
	// hand-off, so MaxQueued does not release it (Closer.stalledQueued).
	progressed
)
