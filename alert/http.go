package alert

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// A Dialer dials TLS connections and returns them as [*Conn], so that their
// errors report the peer's alert. Its DialContext method fits
// http.Transport.DialTLSContext. The zero value is ready to use.
//
// net/http negotiates HTTP/2, and fills in Response.TLS, only for
// connections that are a *tls.Conn, which a *Conn cannot be: through a
// Dialer the transport speaks HTTP/1.1, and Config must not offer "h2" in
// NextProtos. [NewHTTPClient] takes care of that. The connection's TLS state
// stays available through httptrace's GotConn, as a *Conn.
type Dialer struct {
	// NetDialer dials the TCP connection; nil means a zero net.Dialer.
	NetDialer *net.Dialer

	// Dial, if set, makes the connection that TLS runs over instead of
	// NetDialer: through a proxy, inside a network namespace, or with a
	// test's own dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Config is the TLS configuration, as for tls.Dialer; nil means the
	// zero configuration. ServerName defaults to the dialed host.
	Config *tls.Config

	// ProbeTimeout is the bound given to each Conn; see WithProbeTimeout.
	ProbeTimeout time.Duration
}

// DialContext connects to addr, completes the TLS handshake and returns a
// *Conn. A handshake that fails because of the peer's alert returns an
// [*Error].
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var td tls.Dialer
	var probe time.Duration
	if d != nil {
		td.NetDialer, td.Config, probe = d.NetDialer, d.Config, d.ProbeTimeout
	}
	var tc *tls.Conn
	var err error
	if d != nil && d.Dial != nil {
		tc, err = d.dialWith(ctx, network, addr)
	} else {
		var nc net.Conn
		if nc, err = td.DialContext(ctx, network, addr); err == nil {
			tc = nc.(*tls.Conn)
		}
	}
	if err != nil {
		if ae, ok := FromError(err); ok {
			return nil, ae
		}
		return nil, err
	}
	return Wrap(tc, WithProbeTimeout(probe)), nil
}

// dialWith is what tls.Dialer does, over a connection from d.Dial.
func (d *Dialer) dialWith(ctx context.Context, network, addr string) (*tls.Conn, error) {
	raw, err := d.Dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	cfg := d.Config
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
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// NewHTTPClient returns an HTTP client whose HTTPS connections report the
// server's alert: a request refused by the server, for instance because of
// the client certificate in cfg, fails with an error in which errors.As
// finds an [*Error].
//
// Its Transport is a clone of http.DefaultTransport (proxies from the
// environment, the same timeouts and pool) whose DialTLSContext is a
// [Dialer] with cfg (nil means the zero configuration), restricted to
// HTTP/1.1 for the reason given on Dialer. Requests through a proxy are
// dialed by the transport itself, with cfg, and are not wrapped.
func NewHTTPClient(cfg *tls.Config) *http.Client {
	if cfg == nil {
		cfg = new(tls.Config)
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}

	tr, ok := http.DefaultTransport.(*http.Transport)
	if ok {
		tr = tr.Clone()
	} else {
		tr = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	tr.TLSClientConfig = cfg
	tr.DialTLSContext = (&Dialer{Config: cfg}).DialContext
	tr.ForceAttemptHTTP2 = false
	var p http.Protocols
	p.SetHTTP1(true)
	tr.Protocols = &p
	return &http.Client{Transport: tr}
}
