package alert

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Bounds a Dialer applies when its fields leave them zero: those of
// http.DefaultTransport.
const (
	// DefaultDialTimeout bounds the connection under TLS, as
	// http.DefaultTransport's net.Dialer does.
	DefaultDialTimeout = 30 * time.Second

	// DefaultHandshakeTimeout bounds the TLS handshake, as
	// http.DefaultTransport's TLSHandshakeTimeout does.
	DefaultHandshakeTimeout = 10 * time.Second
)

// A Dialer dials TLS connections and returns them as [*Conn], so that their
// errors report the peer's alert. [NewTransport] uses it for HTTP/1.1 and
// HTTP/2. The zero value is ready to use.
//
// Its DialContext method also fits http.Transport.DialTLSContext, but an
// http.Transport of Go 1.26 and earlier speaks HTTP/2 only over a
// *tls.Conn: with it, Config.NextProtos must not offer "h2", or a server
// that picks it gets HTTP/1.1. (From Go 1.27 net/http negotiates over any
// connection with a ConnectionState method, as a *Conn has.)
//
// Without a context deadline a dial still ends: the connection under TLS
// within DialTimeout, the handshake within HandshakeTimeout, so that a
// server that accepts the connection but never answers the ClientHello does
// not hold the caller forever.
type Dialer struct {
	// NetDialer dials the TCP connection; nil means a net.Dialer with a
	// 30 s keep-alive, as http.DefaultTransport's.
	NetDialer *net.Dialer

	// Dial, if set, makes the connection that TLS runs over instead of
	// NetDialer: through a proxy, inside a network namespace, or with a
	// test's own dialer. Its context ends when it returns.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Config is the TLS configuration, as for tls.Dialer; nil means the
	// zero configuration. ServerName defaults to the dialed host.
	Config *tls.Config

	// DialTimeout bounds the connection under TLS (NetDialer or Dial).
	// Zero means DefaultDialTimeout; negative means no bound but the
	// context's. A NetDialer's own Timeout also applies.
	DialTimeout time.Duration

	// HandshakeTimeout bounds the TLS handshake. Zero means
	// DefaultHandshakeTimeout; negative means no bound but the context's.
	HandshakeTimeout time.Duration

	// ProbeTimeout is the bound given to each Conn; see WithProbeTimeout.
	ProbeTimeout time.Duration
}

// timeoutError is what a dial returns when one of the Dialer's own bounds
// ran out. Like net/http's "TLS handshake timeout", it is a net.Error whose
// Timeout method reports true; errors.Is finds context.DeadlineExceeded.
type timeoutError struct {
	what string
	d    time.Duration
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("alert: %s timed out after %v", e.what, e.d)
}
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
func (e *timeoutError) Unwrap() error   { return context.DeadlineExceeded }

// bound returns d's value with zero meaning def and a negative value
// meaning none (0).
func bound(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// DialContext connects to addr, completes the TLS handshake and returns a
// *Conn. A handshake that fails because of the peer's alert returns an
// [*Error]; one that runs out of DialTimeout or HandshakeTimeout returns a
// net.Error whose Timeout method reports true.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var dd Dialer
	if d != nil {
		dd = *d
	}
	raw, err := dd.dialRaw(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cfg := dd.Config
	if cfg == nil {
		cfg = new(tls.Config)
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(raw, cfg)
	hctx := ctx
	ht := bound(dd.HandshakeTimeout, DefaultHandshakeTimeout)
	if ht > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, ht)
		defer cancel()
	}
	// HandshakeContext closes raw when hctx ends, which is what bounds a
	// server that never answers.
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		if ae, ok := FromError(err); ok {
			return nil, ae
		}
		if hctx.Err() != nil && ctx.Err() == nil {
			return nil, &net.OpError{Op: "tls handshake", Net: network, Addr: raw.RemoteAddr(),
				Err: &timeoutError{"TLS handshake", ht}}
		}
		return nil, err
	}
	return Wrap(tc, WithProbeTimeout(dd.ProbeTimeout)), nil
}

// dialRaw makes the connection TLS runs over, within DialTimeout.
func (d *Dialer) dialRaw(ctx context.Context, network, addr string) (net.Conn, error) {
	dt := bound(d.DialTimeout, DefaultDialTimeout)
	dctx := ctx
	if dt > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, dt)
		defer cancel()
	}
	var raw net.Conn
	var err error
	switch {
	case d.Dial != nil:
		raw, err = d.Dial(dctx, network, addr)
	case d.NetDialer != nil:
		raw, err = d.NetDialer.DialContext(dctx, network, addr)
	default:
		nd := net.Dialer{KeepAlive: 30 * time.Second}
		raw, err = nd.DialContext(dctx, network, addr)
	}
	if err != nil {
		if dctx.Err() != nil && ctx.Err() == nil {
			return nil, &net.OpError{Op: "dial", Net: network, Err: &timeoutError{"dial " + addr, dt}}
		}
		return nil, err
	}
	return raw, nil
}

// NewHTTPClient returns an HTTP client whose HTTPS requests report the
// server's alert: a request refused by the server, for instance because of
// the client certificate in cfg, fails with an error in which errors.As
// finds an [*Error]. Its Transport is NewTransport(&Dialer{Config: cfg});
// see [Transport] for the protocols, the pool and proxies.
func NewHTTPClient(cfg *tls.Config) *http.Client {
	return &http.Client{Transport: NewTransport(&Dialer{Config: cfg})}
}
