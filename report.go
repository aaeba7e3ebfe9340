package linger

import (
	"errors"
	"net"
	"strconv"
	"time"
)

// Outcome says how a connection handed to a Closer ended.
type Outcome uint8

const (
	// PeerClosed: the peer closed its side; the socket ended with FIN in
	// both directions. This is the outcome linger exists for. It is also
	// the outcome of a connection whose peer closed and then reset bytes we
	// sent after its close, such as the TLS close_notify that a server
	// sends when it sees the client's FIN (curl, Go's client and browsers
	// all close that way): a peer resets only bytes that arrive after its
	// application closed the socket, so there was no one left to read them,
	// and nothing went wrong. Such a report can have Unacked above zero; it
	// is never Undelivered.
	PeerClosed Outcome = iota
	// PeerReset: the peer reset the connection, before or after the
	// hand-off, without closing it first, or the socket failed (then
	// Report.Err says how). A client that closes with bytes of ours still
	// unread in its socket (a TLS close_notify that arrived after the
	// response it wanted) resets instead of closing: the outcome alone is
	// not a failure, and a reset with no Err is never Undelivered.
	PeerReset
	// Idle: the peer neither sent nor acknowledged anything for
	// Config.IdleTimeout.
	Idle
	// HardCap: the connection lingered for Config.MaxHold.
	HardCap
	// Budget: the peer sent more than Config.MaxDiscard bytes, or
	// Config.PressureDiscard under pressure. On Linux, under pressure, one
	// that had already sent more when Close was called is reset within
	// Close, without lingering and without its bytes being read, so its
	// Report.Discarded is 0. Without pressure only a MaxDiscard under
	// 64 KiB is found within Close, once Close has read one byte more than
	// it; past a larger one the connection lingers until the event loop
	// has read as much.
	Budget
	// Released: the connection was released early to make room for a newer
	// one under Config.MaxConns or Config.MaxConnsPerIP, or aborted under
	// Config.MaxQueued (then Report.Err is ErrMaxQueued).
	Released
	// Shutdown: Closer.Shutdown's context ended before the peer finished.
	Shutdown
	// Plain: the connection was closed at once, without lingering; Report.Err
	// says why.
	Plain

	numOutcomes = iota
)

var outcomeNames = [numOutcomes]string{
	PeerClosed: "peer_closed",
	PeerReset:  "peer_reset",
	Idle:       "idle",
	HardCap:    "hard_cap",
	Budget:     "budget",
	Released:   "released",
	Shutdown:   "shutdown",
	Plain:      "plain",
}

// String returns the outcome's name in snake case, as used in Stats.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText lets an Outcome be a readable JSON map key.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Errors in Report.Err for connections closed plainly.
var (
	// ErrNotTCP: the connection was not a TCP connection.
	ErrNotTCP = errors.New("linger: not a TCP connection")
	// ErrShutdown: the connection was handed off after Shutdown.
	ErrShutdown = errors.New("linger: closer is shut down")
	// ErrMaxQueued: a Released connection was aborted with a reset to keep
	// the bytes queued by lingering connections under Config.MaxQueued; or,
	// for a Plain one, only peers making progress held those bytes, so the
	// new connection was closed plainly instead of lingering.
	ErrMaxQueued = errors.New("linger: queued bytes over MaxQueued")
)

// Report describes one connection handed to a Closer, once it is closed.
type Report struct {
	// RemoteAddr is the peer's address, as the connection reported it.
	RemoteAddr net.Addr
	// Outcome says how the connection ended.
	Outcome Outcome
	// Held is how long the connection lingered.
	Held time.Duration
	// Discarded counts the bytes read from the peer and thrown away.
	Discarded int64
	// Unacked counts the bytes of ours (not our FIN) that the peer had not
	// acknowledged when linger let go of the socket, as SIOCOUTQ read
	// them: 0 means the peer's kernel got all of our last word. It is -1
	// where this cannot be known (other systems than Linux, or a plain
	// close). Above zero it is a fact, not yet a failure: a peer that
	// closed or reset first and refused the bytes that came after, or a
	// socket whose bytes the kernel goes on sending after the close, has
	// lost nothing it wanted. Undelivered says when it is one.
	Unacked int64
	// Err is the reason for a Plain outcome, the socket error behind a
	// PeerReset one, or ErrMaxQueued for a Released one aborted under
	// Config.MaxQueued; nil otherwise.
	Err error
}

// Undelivered reports whether our last word was lost on linger's side of
// the peer's decision: bytes of ours were unacknowledged when the
// connection ended (Unacked > 0, known on Linux only), and not because the
// peer ended it. It is what a dashboard should count as failure:
// successful traffic, however its clients close, leaves it false.
//
// A peer that ends the connection itself is done reading. One that closed
// (PeerClosed) either shut down only writing, and goes on acknowledging
// what our kernel sends after our close, or closed its socket, and then
// its kernel resets the bytes that arrive after, with no one left to read
// them (Linux counts these in TCPAbortOnData): curl resets a TLS
// close_notify sent in answer to its FIN that way. One that reset
// (PeerReset with no Err) had closed with data unread, or aborted: bytes of
// ours still on their way were refused by a socket that no longer existed,
// as Go's client does with a close_notify it finds after a response it read
// whole. The rest count: an idle or capped peer that stopped
// acknowledging, a socket error (a PeerReset whose Err is ETIMEDOUT, say),
// a peer reset for its budget, released, aborted under MaxQueued, or cut
// short by Shutdown.
func (r Report) Undelivered() bool {
	if r.Unacked <= 0 {
		return false
	}
	switch r.Outcome {
	case PeerClosed:
		return false
	case PeerReset:
		return r.Err != nil
	}
	return true
}

// holdBuckets are the upper bounds of Stats.Hold's buckets.
var holdBuckets = [...]time.Duration{
	time.Millisecond,
	10 * time.Millisecond,
	100 * time.Millisecond,
	time.Second,
	2 * time.Second,
	5 * time.Second,
	10 * time.Second,
	30 * time.Second,
}

// Stats is a snapshot of a Closer's counters. Its fields are cumulative since
// New except Lingering; it marshals to JSON as is, so expvar.Func can
// publish it, and maps directly onto Prometheus counters and a histogram.
type Stats struct {
	// Lingering counts the connections lingering now.
	Lingering int `json:"lingering"`
	// Outcomes counts closed connections by outcome.
	Outcomes map[Outcome]uint64 `json:"outcomes"`
	// Discarded counts the bytes read and thrown away.
	Discarded uint64 `json:"discarded_bytes"`
	// Undelivered counts the connections whose peer may not have got our
	// last word (Report.Undelivered; Linux only): the count to alert on.
	Undelivered uint64 `json:"undelivered"`
	// Hold is the distribution of the time connections lingered.
	Hold Histogram `json:"hold"`
}

// Histogram is a cumulative histogram of durations, shaped like
// Prometheus's: Counts[i] counts the observations at most Bounds[i], and
// Count counts them all.
type Histogram struct {
	Bounds []time.Duration `json:"bounds_ns"`
	Counts []uint64        `json:"counts"`
	Count  uint64          `json:"count"`
	Sum    time.Duration   `json:"sum_ns"`
}

// counters is the Closer's live form of Stats, guarded by Closer.mu.
type counters struct {
	outcomes    [numOutcomes]uint64
	discarded   uint64
	undelivered uint64
	hold        [len(holdBuckets)]uint64 // not cumulative
	holdCount   uint64
	holdSum     time.Duration
}

func (c *counters) add(r *Report) {
	c.outcomes[r.Outcome]++
	c.discarded += uint64(r.Discarded)
	if r.Undelivered() {
		c.undelivered++
	}
	for i, b := range holdBuckets {
		if r.Held <= b {
			c.hold[i]++
			break
		}
	}
	c.holdCount++
	c.holdSum += r.Held
}

func (c *counters) snapshot(lingering int) Stats {
	s := Stats{
		Lingering:   lingering,
		Outcomes:    make(map[Outcome]uint64, numOutcomes),
		Discarded:   c.discarded,
		Undelivered: c.undelivered,
		Hold: Histogram{
			Bounds: holdBuckets[:],
			Counts: make([]uint64, len(holdBuckets)),
			Count:  c.holdCount,
			Sum:    c.holdSum,
		},
	}
	for o, n := range c.outcomes {
		s.Outcomes[Outcome(o)] = n
	}
	var cum uint64
	for i, n := range c.hold {
		cum += n
		s.Hold.Counts[i] = cum
	}
	return s
}
