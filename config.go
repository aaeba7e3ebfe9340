package linger

import (
	"errors"
	"fmt"
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

// Config bounds a Closer. The zero value is ready to use: each zero field
// takes its default.
type Config struct {
	// IdleTimeout ends a lingering connection whose peer has neither sent
	// bytes nor acknowledged bytes we sent for this long. A connection with
	// bytes of ours, or our FIN, still unacknowledged is not idle: the
	// kernel is still sending them. Acknowledgements are seen on Linux
	// only; elsewhere only incoming bytes count.
	// Zero means DefaultIdleTimeout, or MaxHold if that is shorter.
	IdleTimeout time.Duration

	// MaxHold caps the total time a connection lingers, however much
	// progress its peer makes. Zero means DefaultMaxHold.
	MaxHold time.Duration

	// MaxDiscard caps the bytes read and discarded from one connection.
	// Zero means DefaultMaxDiscard.
	MaxDiscard int64

	// PressureDiscard caps the bytes read and discarded from one
	// connection, new or already lingering, while lingering is under
	// pressure: while the connections lingering number three quarters of
	// MaxConns or more, or one was released to make room (under MaxConns,
	// MaxConnsPerIP or MaxQueued) within the last IdleTimeout. A peer that
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
	// cap, that peer's longest-lingering connection is released. Zero means
	// DefaultMaxConnsPerIP; a negative value means no cap.
	MaxConnsPerIP int

	// IPv6PrefixLen is the length of the IPv6 prefix that MaxConnsPerIP
	// counts as one peer, from 1 to 128. Zero means DefaultIPv6PrefixLen.
	IPv6PrefixLen int

	// MaxQueued caps the bytes of ours (a response, an alert, and the FIN)
	// that lingering connections together still hold unacknowledged in
	// their kernel send queues, as measured when each was handed off. When
	// a new connection would take the total over it, the longest-lingering
	// connections holding queued bytes are released and aborted with a
	// reset, which frees their send queues at once, as a plain close with
	// unread data would. It applies to Linux's event loop, which sees the
	// send queues; zero means DefaultMaxQueued.
	MaxQueued int64

	// TCPUserTimeout, if positive, is set as TCP_USER_TIMEOUT (Linux only)
	// on every connection Listener accepts: the kernel then aborts a
	// connection whose sent data stays unacknowledged this long. grpc-go
	// sets it from its keepalive Timeout (20 s by default) only on a
	// *net.TCPConn, which Listener's connections are not; set it here to
	// keep that protection. Zero leaves the socket's setting alone.
	TCPUserTimeout time.Duration

	// OnClose, if set, receives a Report for every connection handed to the
	// Closer once it is finally closed. It is called without locks held,
	// from whichever goroutine ended the connection (often the Closer's own),
	// possibly concurrently, so it must be safe for concurrent use and
	// should return quickly.
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
	case c.MaxQueued < 0:
		return c, fmt.Errorf("%w: MaxQueued %d is negative", ErrConfig, c.MaxQueued)
	case c.TCPUserTimeout < 0:
		return c, fmt.Errorf("%w: TCPUserTimeout %v is negative", ErrConfig, c.TCPUserTimeout)
	}
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
	if c.MaxQueued == 0 {
		c.MaxQueued = DefaultMaxQueued
	}
	if c.IdleTimeout > c.MaxHold {
		return c, fmt.Errorf("%w: IdleTimeout %v exceeds MaxHold %v", ErrConfig, c.IdleTimeout, c.MaxHold)
	}
	return c, nil
}
