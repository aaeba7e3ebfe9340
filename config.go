package linger

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Default bounds. The README explains each against what Apache httpd, nginx,
// Envoy and Go's net/http use.
const (
	// DefaultIdleTimeout is Apache's lingering read timeout: a peer that
	// neither sends nor acknowledges anything for this long is not coming
	// back. A peer that received our last word usually closes within a round
	// trip.
	DefaultIdleTimeout = 2 * time.Second

	// DefaultMaxHold is the total cap that Apache and nginx both use.
	DefaultMaxHold = 30 * time.Second

	// DefaultMaxDiscard is larger than the largest receive window Linux
	// grows to by default (net.ipv4.tcp_rmem: 6 MiB), so whatever a
	// cooperating client had in flight when it learned of the close fits.
	DefaultMaxDiscard = 8 << 20

	// DefaultPressureDiscard is the byte budget while lingering is under
	// pressure: a request's worth, so a client that sent its request and
	// stopped still gets our last word, while one that keeps sending (an
	// upload the server rejected, or an attacker) costs at most this much
	// to discard instead of MaxDiscard. Against a flood of rejected
	// handshakes it kept the server's CPU per rejection at 1.0-1.3x a
	// plain close's for clients that keep sending, where 256 KiB gave
	// 1.3-1.5x; the price is that, near the cap, a client uploading 1 MiB
	// is cut off (and reset) more often before it reads our answer.
	DefaultPressureDiscard = 64 << 10

	// pressureRcvBuf is the receive buffer (SO_RCVBUF) a lingering socket
	// is clamped to under pressure, or PressureDiscard if smaller. Against
	// a flood of rejected handshakes it took 3-6 % off the server's CPU
	// per rejection for senders that keep sending, and cost no delivery;
	// 4 KiB did no better and slowed cooperative senders.
	pressureRcvBuf = 16 << 10

	// DefaultMaxConns bounds the descriptors and kernel socket memory that
	// lingering can take.
	DefaultMaxConns = 4096

	// DefaultMaxQueued bounds the kernel memory that lingering sockets keep
	// for our unacknowledged bytes: a peer that reads slowly on purpose
	// can otherwise keep every lingering socket's send queue full until
	// MaxHold.
	DefaultMaxQueued = 64 << 20

	// DefaultMaxConnsPerIP keeps one address (or one IPv6 /64) from taking
	// every lingering slot, and with them the lingering of every other
	// client. A legitimate address behind a NAT reaches it only with more
	// than 256 connections lingering at once: at the hold times measured
	// (a few milliseconds on a good path, 110–500 ms at the median over a
	// path with 20 ms each way and 5 % loss), hundreds to tens of
	// thousands of closes a second from that one address. Past the cap its
	// oldest lingering connection is released, which is no worse than the
	// plain close it would have had without linger.
	DefaultMaxConnsPerIP = 256

	// DefaultIPv6PrefixLen groups IPv6 peers by /64 for MaxConnsPerIP:
	// one host, or one customer of a provider, usually has a whole /64 to
	// pick addresses from.
	DefaultIPv6PrefixLen = 64
)

// Largest values the engine's arithmetic takes; larger ones are held at
// these (Config says which fields). The engine's clocks are int64
// nanoseconds since the Closer was made, and a deadline is a clock plus a
// bound: with both under 2^62, no sum overflows, and the "no pressure yet"
// origin, -2^62, is still further in the past than any bound reaches.
const (
	// maxBound is about 146 years: a bound this long never runs out in a
	// process's life, so a longer one means the same.
	maxBound = time.Duration(1 << 62)
	// maxBytes is 4 EiB: more than any connection carries, so the byte
	// budget plus the one byte the drains read beyond it cannot overflow.
	maxBytes = int64(1 << 62)
	// maxUserTimeout is the longest TCP_USER_TIMEOUT the kernel takes: it
	// is an int of milliseconds (24.8 days). A longer one would be cut to
	// a negative number (refused) or a few hours.
	maxUserTimeout = time.Duration(math.MaxInt32) * time.Millisecond
)

// Config bounds a Closer. The zero value is ready to use: each zero field
// takes its default.
//
// Negative values: for the bounds that make lingering end (IdleTimeout,
// MaxHold, MaxDiscard, MaxConns) and for TCPUserTimeout a negative value is
// an error, since "off" would mean lingering without end or a kernel
// setting that does not exist; a huge value is accepted instead and means
// as much as "no bound". For the caps that exist to share lingering out
// under load (PressureDiscard, MaxConnsPerIP, MaxQueued) a negative value
// turns the cap off. Values beyond what the engine's int64 clock and
// counters can add up are held at about 146 years (durations) and 4 EiB
// (bytes), which no connection reaches; a TCPUserTimeout beyond the
// kernel's int milliseconds (24.8 days) is an error.
type Config struct {
	// IdleTimeout ends a lingering connection whose peer has neither sent
	// bytes nor acknowledged bytes we sent for this long. A connection with
	// bytes of ours, or our FIN, still unacknowledged is not idle: the
	// kernel is still sending them. Acknowledgements are seen on Linux
	// only; elsewhere only incoming bytes count.
	// Zero means DefaultIdleTimeout, or MaxHold if that is shorter.
	// Values over about 146 years are held there (they never run out).
	IdleTimeout time.Duration

	// MaxHold caps the total time a connection lingers, however much
	// progress its peer makes. Zero means DefaultMaxHold; values over about
	// 146 years are held there (they never run out).
	MaxHold time.Duration

	// MaxDiscard caps the bytes read and discarded from one connection.
	// Zero means DefaultMaxDiscard; values over 4 EiB are held there.
	MaxDiscard int64

	// PressureDiscard caps the bytes read and discarded from one
	// connection, new or already lingering, while lingering is under
	// pressure: while the connections lingering number three quarters of
	// MaxConns or more, or one was released to make room under MaxConns
	// within the last IdleTimeout. A release under MaxConnsPerIP puts only
	// that peer (its address, or its IPv6 prefix) under pressure, for
	// IdleTimeout, and so does a release under MaxQueued, for the peer
	// whose connection was released (everyone, with MaxConnsPerIP off): an
	// address at its own cap must not lower everyone else's budget, or the
	// cap meant to keep one address from taking everyone's lingering would
	// be the lever that does it. A peer that
	// keeps sending then costs at most this much before it is released
	// with the Budget outcome. Under pressure each lingering socket's
	// receive buffer (SO_RCVBUF) is also clamped to 16 KiB, or
	// PressureDiscard if smaller, so that such a peer is offered a small
	// window instead of what autotuning grew; the clamp stays for the
	// rest of that socket's lingering. Zero means DefaultPressureDiscard
	// (or MaxDiscard, if smaller); a negative value, or one above
	// MaxDiscard, turns the pressure budget, and the clamp with it, off.
	PressureDiscard int64

	// MaxConns caps the connections lingering at once. When a new connection
	// arrives at the cap, the one that has lingered longest is released to
	// make room. Zero means DefaultMaxConns.
	MaxConns int

	// MaxConnsPerIP caps the connections lingering at once for one peer:
	// one IPv4 address, or one IPv6 prefix of IPv6PrefixLen bits. At the
	// cap, that peer's longest-lingering connection is released, and that
	// peer alone is under pressure (see PressureDiscard). Zero means
	// DefaultMaxConnsPerIP; a negative value means no cap.
	MaxConnsPerIP int

	// IPv6PrefixLen is the length of the IPv6 prefix that MaxConnsPerIP
	// counts as one peer, from 1 to 128. Zero means DefaultIPv6PrefixLen.
	IPv6PrefixLen int

	// MaxQueued caps the bytes of ours (a response, an alert, and the FIN)
	// that lingering connections together still hold unacknowledged in
	// their kernel send queues, as last measured (at the hand-off, and
	// then once per IdleTimeout). When a new connection would take the
	// total over it, lingering connections that hold queued bytes, have
	// lingered IdleTimeout and whose peers have acknowledged none of them
	// since the hand-off (a zero window from the start) are released,
	// longest lingering first, and aborted with a reset, which frees their
	// send queues at once. A peer that has acknowledged some (a slow
	// reader making progress, whose window opens and closes as its
	// application reads) is never released for this: if only such peers
	// hold the queued bytes, the new connection is closed plainly instead
	// (Outcome Plain, ErrMaxQueued), which is what it would have had
	// without linger, and its kernel sends the rest as for any close. It
	// applies to Linux's event loop, which sees the send queues; zero
	// means DefaultMaxQueued, a negative value means no cap.
	MaxQueued int64

	// TCPUserTimeout, if positive, is set as TCP_USER_TIMEOUT (Linux only)
	// on every connection Listener accepts: the kernel then aborts a
	// connection whose sent data stays unacknowledged this long. grpc-go
	// sets it from its keepalive Timeout (20 s by default) only on a
	// *net.TCPConn, which Listener's connections are not; set it here to
	// keep that protection. Zero leaves the socket's setting alone. The
	// kernel counts it in whole milliseconds, as an int: a value under a
	// millisecond is one, and one over 24.8 days (math.MaxInt32
	// milliseconds) is an error.
	TCPUserTimeout time.Duration

	// OnClose, if set, receives a Report for every connection handed to the
	// Closer once it is finally closed. It is called without locks held,
	// from whichever goroutine ended the connection (often the Closer's own),
	// possibly concurrently, so it must be safe for concurrent use and
	// should return quickly. It may call any of the Closer's methods;
	// Shutdown called from OnClose does not wait (see Closer.Shutdown).
	OnClose func(Report)
}

// ErrConfig is wrapped by the error New returns for an invalid Config.
var ErrConfig = errors.New("linger: invalid config")

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.IdleTimeout < 0:
		return c, fmt.Errorf("%w: IdleTimeout %v is negative", ErrConfig, c.IdleTimeout)
	case c.MaxHold < 0:
		return c, fmt.Errorf("%w: MaxHold %v is negative", ErrConfig, c.MaxHold)
	case c.MaxDiscard < 0:
		return c, fmt.Errorf("%w: MaxDiscard %d is negative", ErrConfig, c.MaxDiscard)
	case c.MaxConns < 0:
		return c, fmt.Errorf("%w: MaxConns %d is negative", ErrConfig, c.MaxConns)
	case c.IPv6PrefixLen < 0 || c.IPv6PrefixLen > 128:
		return c, fmt.Errorf("%w: IPv6PrefixLen %d is not between 1 and 128", ErrConfig, c.IPv6PrefixLen)
	case c.TCPUserTimeout < 0:
		return c, fmt.Errorf("%w: TCPUserTimeout %v is negative", ErrConfig, c.TCPUserTimeout)
	case c.TCPUserTimeout > maxUserTimeout:
		return c, fmt.Errorf("%w: TCPUserTimeout %v exceeds the kernel's %v (an int of milliseconds)", ErrConfig, c.TCPUserTimeout, maxUserTimeout)
	}
	c.IdleTimeout = min(c.IdleTimeout, maxBound)
	c.MaxHold = min(c.MaxHold, maxBound)
	c.MaxDiscard = min(c.MaxDiscard, maxBytes)
	if c.MaxHold == 0 {
		c.MaxHold = DefaultMaxHold
	}
	if c.IdleTimeout == 0 {
		// A MaxHold set below the default idle timeout is the tighter
		// bound the caller asked for, not a conflict.
		c.IdleTimeout = min(DefaultIdleTimeout, c.MaxHold)
	}
	if c.MaxDiscard == 0 {
		c.MaxDiscard = DefaultMaxDiscard
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	switch {
	case c.PressureDiscard == 0:
		c.PressureDiscard = min(DefaultPressureDiscard, c.MaxDiscard)
	case c.PressureDiscard < 0 || c.PressureDiscard > c.MaxDiscard:
		// Off; pressure never raises the budget.
		c.PressureDiscard = c.MaxDiscard
	}
	switch {
	case c.MaxConnsPerIP == 0:
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	case c.MaxConnsPerIP < 0:
		c.MaxConnsPerIP = 0 // no cap
	}
	if c.IPv6PrefixLen == 0 {
		c.IPv6PrefixLen = DefaultIPv6PrefixLen
	}
	switch {
	case c.MaxQueued == 0:
		c.MaxQueued = DefaultMaxQueued
	case c.MaxQueued < 0:
		c.MaxQueued = math.MaxInt64 // no cap: no sum of queues reaches it
	}
	if c.IdleTimeout > c.MaxHold {
		return c, fmt.Errorf("%w: IdleTimeout %v exceeds MaxHold %v", ErrConfig, c.IdleTimeout, c.MaxHold)
	}
	return c, nil
}
