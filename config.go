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

	// DefaultMaxConns bounds the descriptors and kernel socket memory that
	// lingering can take.
	DefaultMaxConns = 4096
)

// Config bounds a Closer. The zero value is ready to use: each zero field
// takes its default.
type Config struct {
	// IdleTimeout ends a lingering connection whose peer has neither sent
	// bytes nor acknowledged bytes we sent for this long. Acknowledgements
	// are seen on Linux only; elsewhere only incoming bytes count.
	// Zero means DefaultIdleTimeout, or MaxHold if that is shorter.
	IdleTimeout time.Duration

	// MaxHold caps the total time a connection lingers, however much
	// progress its peer makes. Zero means DefaultMaxHold.
	MaxHold time.Duration

	// MaxDiscard caps the bytes read and discarded from one connection.
	// Zero means DefaultMaxDiscard.
	MaxDiscard int64

	// MaxConns caps the connections lingering at once. When a new connection
	// arrives at the cap, the one that has lingered longest is released to
	// make room. Zero means DefaultMaxConns.
	MaxConns int

	// MaxConnsPerIP, if positive, caps the connections lingering at once for
	// one peer IP address; at the cap, that peer's longest-lingering
	// connection is released. Zero means no cap: peers behind one NAT share
	// an address.
	MaxConnsPerIP int

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
	case c.MaxConnsPerIP < 0:
		return c, fmt.Errorf("%w: MaxConnsPerIP %d is negative", ErrConfig, c.MaxConnsPerIP)
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
	if c.IdleTimeout > c.MaxHold {
		return c, fmt.Errorf("%w: IdleTimeout %v exceeds MaxHold %v", ErrConfig, c.IdleTimeout, c.MaxHold)
	}
	return c, nil
}
