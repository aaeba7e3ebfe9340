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
	// the outcome of a connection whose peer had closed and then reset it
	// by the time it was handed off (typically a client that reset bytes we
	// sent after its close, such as a TLS close_notify): there was nothing
	// left to linger for, and nothing went wrong.
	PeerClosed Outcome = iota
	// PeerReset: the peer reset the connection, before or after the
	// hand-off, without closing it first, or the socket failed.
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
	// Unacked counts the bytes we had written that the peer had not yet
	// acknowledged when the socket was released: 0 means the peer got all of
	// our last word. It is -1 where this cannot be known (other systems than
	// Linux, or a plain close).
	Unacked int64
	// Err is the reason for a Plain outcome, the socket error behind a
	// PeerReset one, or ErrMaxQueued for a Released one aborted under
	// Config.MaxQueued; nil otherwise.
	Err error
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
	// Unacked counts connections released while the peer had not yet
	// acknowledged all we had written (Linux only).
	Unacked uint64 `json:"unacked"`
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
	outcomes  [numOutcomes]uint64
	discarded uint64
	unacked   uint64
	hold      [len(holdBuckets)]uint64 // not cumulative
	holdCount uint64
	holdSum   time.Duration
}

func (c *counters) add(r *Report) {
	c.outcomes[r.Outcome]++
	c.discarded += uint64(r.Discarded)
	if r.Unacked > 0 {
		c.unacked++
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
		Lingering: lingering,
		Outcomes:  make(map[Outcome]uint64, numOutcomes),
		Discarded: c.discarded,
		Unacked:   c.unacked,
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
