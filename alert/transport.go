package alert

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http2"
	"golang.org/x/net/idna"
)

// Transport is an http.RoundTripper whose HTTPS requests report the
// server's alert, over HTTP/2 and HTTP/1.1 alike. Use [NewTransport] to
// make one; it is safe for concurrent use, like http.Transport.
//
// Connections are dialed by a [Dialer] and are [*Conn]s. The protocol is
// negotiated by ALPN, as the stock transport does: HTTP/2 when the server
// offers it, HTTP/1.1 otherwise, over an http.Transport cloned from
// http.DefaultTransport, with its pool and timeouts. From Go 1.27 that
// transport speaks both protocols itself, as it does over a *tls.Conn, and
// a request costs what it costs the stock transport. Before Go 1.27 it
// speaks HTTP/2 only over a *tls.Conn, so HTTP/2 goes through
// golang.org/x/net/http2, with a pool of its own: what a server speaks is
// then remembered until CloseIdleConnections, so that one without HTTP/2
// is dialed for HTTP/1.1 straight away, and a request with "Expect:
// 100-continue" sends its body over HTTP/2 without waiting (x/net does not
// apply ExpectContinueTimeout). Either way connections are kept and reused
// like the stock transport's, and Response.TLS is set over both protocols.
//
// A request that fails because the server sent a fatal alert returns an
// error in which errors.As finds an [*Error] whose Err is the transport's
// error, so errors.Is finds what it found before. This includes the first
// request on a new HTTP/2 connection, for which the HTTP/2 client reports
// only "client conn could not be established": the alert is then taken
// from the connections dialed for HTTP/2 to the request's address, an open
// one that received an alert or else the last one that died of one in the
// past 5 s. That is the request's own connection's alert, or that of
// another connection to the same server refused at the same time. Knowing
// the request's own connection would cost every request a trace hook; the
// record costs nothing until a request fails that way.
//
// Proxies: requests for which http.ProxyFromEnvironment names a proxy are
// made exactly as by a clone of http.DefaultTransport (HTTP/2 or HTTP/1.1
// over the proxy's tunnel, TLS by net/http), and report only the alerts
// crypto/tls itself returns, those of a failed handshake; an alert that
// follows a completed handshake is lost as with the stock transport. To
// report every alert through a proxy, make the tunnel in Dialer.Dial and
// leave the environment's proxy variables unset for those hosts.
type Transport struct {
	h1 *http.Transport // HTTP/1.1, every request not over direct TLS, and all of them when stockH2
	h2 *h2Transport    // HTTP/2 over direct TLS, unless stockH2 (nil then)
	d1 Dialer          // offers http/1.1 only
	d2 Dialer          // offers h2 and http/1.1
	// useH2 is false when the caller's Config.NextProtos leaves h2 out.
	useH2 bool

	// protos maps the URL's host to what the server spoke. Every request
	// reads it and few write it, so it is replaced, not changed, under mu.
	protos atomic.Pointer[map[string]proto]

	mu    sync.Mutex
	spare map[string]*spareConn // by address: dialed for HTTP/2, got HTTP/1.1
	// h2Dials holds, by address, what a first request that gets
	// HTTP/2's fixed error needs to find the alert that killed its
	// connection; see h2Conn.
	h2Dials map[string]*h2Dials
}

// h2Dials is what the Transport keeps of the connections it dialed for
// HTTP/2 to one address: those still open, and the alerts of those that
// died of one in the last alertTTL, so that a dead connection's buffers
// are not kept.
type h2Dials struct {
	open []*h2Conn
	dead []deadAlert // oldest first, at most maxDead
}

// deadAlert is the alert of a connection that closed after receiving it.
type deadAlert struct {
	alert *Error
	at    time.Time // when the connection closed
}

// alertTTL bounds how long the alert of a dead HTTP/2 connection may be
// reported for a request that got the fixed error. That request learns of
// the death as soon as it looks at its connection, well within this,
// unless its own hooks hold it; the bound keeps an old rejection from
// being blamed for a later connection's death.
const alertTTL = 5 * time.Second

// maxDead caps the alerts kept per address.
const maxDead = 8

// trim drops the alerts older than alertTTL and past maxDead.
func (d *h2Dials) trim(now time.Time) {
	i := 0
	for i < len(d.dead) && (now.Sub(d.dead[i].at) > alertTTL || len(d.dead)-i > maxDead) {
		i++
	}
	d.dead = slices.Delete(d.dead, 0, i)
}

// alert returns the alert of an open connection that received one, else
// the latest of a connection that died of one within alertTTL, else nil.
func (d *h2Dials) alert(now time.Time) *Error {
	for _, c := range slices.Backward(d.open) {
		if a := c.alert.Load(); a != nil {
			return a
		}
	}
	if n := len(d.dead); n > 0 && now.Sub(d.dead[n-1].at) <= alertTTL {
		return d.dead[n-1].alert
	}
	return nil
}

// h2Conn is a connection handed to the HTTP/2 transport. Its Close moves
// it from the Transport's open connections to its dead alerts, or forgets
// it. The HTTP/2 client may return its fixed error to a waiting request
// before it closes the connection, or after: the alert is stored by the
// read loop's Read, before either.
type h2Conn struct {
	*Conn
	t    *Transport
	addr string
}

func (c *h2Conn) Close() error {
	now := time.Now()
	c.t.mu.Lock()
	if d := c.t.h2Dials[c.addr]; d != nil {
		if i := slices.Index(d.open, c); i >= 0 {
			d.open = slices.Delete(d.open, i, i+1)
			if a := c.alert.Load(); a != nil {
				d.dead = append(d.dead, deadAlert{a, now})
			}
		}
		d.trim(now)
		if len(d.open) == 0 && len(d.dead) == 0 {
			delete(c.t.h2Dials, c.addr)
		}
	}
	c.t.mu.Unlock()
	return c.Conn.Close()
}

// proto is what an authority was found to speak.
type proto uint8

const (
	protoUnknown proto = iota
	protoH1            // did not negotiate h2
	protoH2            // answered a request over HTTP/2
)

// spareConn is a connection dialed for HTTP/2 on which the server chose
// HTTP/1.1; the HTTP/1.1 transport takes it instead of dialing again.
type spareConn struct {
	c     *Conn
	timer *time.Timer // closes c if nobody takes it
}

// spareTTL is how long a spare connection waits for the HTTP/1.1 transport,
// which asks for one at once when the request falls back to it.
const spareTTL = 5 * time.Second

// maxProtos caps the memory of what authorities speak; past it the memory
// starts over, which costs one extra handshake per authority without
// HTTP/2.
const maxProtos = 4096

// errNoH2 is the HTTP/2 dial's error when the server did not choose h2; it
// never leaves RoundTrip.
var errNoH2 = errors.New("alert: server did not negotiate h2")

// NewTransport returns a Transport that dials with d (nil means a zero
// Dialer). d is copied. If d.Config.NextProtos is set, it decides what is
// offered: HTTP/2 only if it lists "h2"; nil offers "h2" and "http/1.1".
func NewTransport(d *Dialer) *Transport {
	var dd Dialer
	if d != nil {
		dd = *d
	}
	cfg := dd.Config
	if cfg == nil {
		cfg = new(tls.Config)
	}
	t := &Transport{
		useH2:   len(cfg.NextProtos) == 0 || slices.Contains(cfg.NextProtos, http2.NextProtoTLS),
		spare:   make(map[string]*spareConn),
		h2Dials: make(map[string]*h2Dials),
	}
	t.protos.Store(new(map[string]proto))
	t.d1, t.d2 = dd, dd
	t.d1.Config = cfg.Clone()
	t.d1.Config.NextProtos = slices.DeleteFunc(slices.Clone(cfg.NextProtos), func(p string) bool { return p == http2.NextProtoTLS })
	if len(t.d1.Config.NextProtos) == 0 {
		t.d1.Config.NextProtos = []string{"http/1.1"}
	}
	t.d2.Config = cfg.Clone()
	if len(cfg.NextProtos) == 0 {
		t.d2.Config.NextProtos = []string{http2.NextProtoTLS, "http/1.1"}
	}

	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		t.h1 = dt.Clone()
	} else {
		t.h1 = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	// Through a proxy net/http does the handshake itself, with this
	// configuration; direct connections come from dialH1.
	t.h1.TLSClientConfig = cfg.Clone()
	t.h1.DialTLSContext = t.dialH1
	t.h2 = newH2Transport(t.dialH2, t.d2.Config, t.h1)
	if stockH2 && t.useH2 {
		// net/http negotiates HTTP/2 over any connection with a
		// ConnectionState method: one transport, one pool, HTTP/1.1 by
		// ALPN, no x/net in the way; h2 stays unused.
		var protos http.Protocols
		protos.SetHTTP1(true)
		protos.SetHTTP2(true)
		t.h1.Protocols = &protos
		t.h1.DialTLSContext = t.dialStock
	}
	return t
}

// dialStock dials for net/http's transport when it speaks both protocols
// itself (stockH2).
func (t *Transport) dialStock(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := t.d2.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	ac := c.(*Conn)
	if ac.ConnectionState().NegotiatedProtocol != http2.NextProtoTLS {
		return ac, nil
	}
	return t.track(addr, ac), nil
}

// dialH2 dials for the HTTP/2 transport. A connection on which the server
// chose HTTP/1.1 is kept for dialH1, and errNoH2 sends the request there.
func (t *Transport) dialH2(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
	c, err := t.d2.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	ac := c.(*Conn)
	if ac.ConnectionState().NegotiatedProtocol != http2.NextProtoTLS {
		t.putSpare(addr, ac)
		return nil, fmt.Errorf("%w: %s", errNoH2, addr)
	}
	return t.track(addr, ac), nil
}

// track records c among the open connections dialed for HTTP/2 to addr
// and returns it as the h2Conn that updates the record when it closes.
func (t *Transport) track(addr string, c *Conn) net.Conn {
	hc := &h2Conn{Conn: c, t: t, addr: addr}
	t.mu.Lock()
	d := t.h2Dials[addr]
	if d == nil {
		if len(t.h2Dials) >= maxProtos {
			// Entries go when their connections close, so only a
			// client of thousands of servers gets here. Starting over
			// costs at most the alert of a connection that dies before
			// its first request.
			clear(t.h2Dials)
		}
		d = new(h2Dials)
		t.h2Dials[addr] = d
	}
	d.open = append(d.open, hc)
	t.mu.Unlock()
	return hc
}

// h2Alert returns the alert that most likely killed a new HTTP/2
// connection to addr: that of an open connection that received one, else
// the latest of one that died of one within alertTTL; nil if none did.
func (t *Transport) h2Alert(addr string) *Error {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if d := t.h2Dials[addr]; d != nil {
		return d.alert(now)
	}
	return nil
}

// dialH1 dials for the HTTP/1.1 transport, taking a spare connection if
// dialH2 left one for addr.
func (t *Transport) dialH1(ctx context.Context, network, addr string) (net.Conn, error) {
	if c := t.takeSpare(addr); c != nil {
		return c, nil
	}
	return t.d1.DialContext(ctx, network, addr)
}

func (t *Transport) putSpare(addr string, c *Conn) {
	s := &spareConn{c: c}
	t.mu.Lock()
	old := t.spare[addr]
	t.spare[addr] = s
	s.timer = time.AfterFunc(spareTTL, func() {
		t.mu.Lock()
		mine := t.spare[addr] == s
		if mine {
			delete(t.spare, addr)
		}
		t.mu.Unlock()
		if mine {
			c.Close()
		}
	})
	t.mu.Unlock()
	if old != nil {
		old.timer.Stop()
		old.c.Close()
	}
}

func (t *Transport) takeSpare(addr string) *Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.spare[addr]
	if s == nil {
		return nil
	}
	delete(t.spare, addr)
	s.timer.Stop()
	return s.c
}

// proto returns what authority was found to speak.
func (t *Transport) proto(authority string) proto {
	return (*t.protos.Load())[authority]
}

func (t *Transport) setProto(authority string, p proto) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.protos.Load()
	if old[authority] == p {
		return
	}
	m := make(map[string]proto, len(old)+1)
	if len(old) < maxProtos {
		maps.Copy(m, old)
	}
	m[authority] = p
	t.protos.Store(&m)
}

// heldBody carries a request body through the HTTP/2 attempt of a request
// to an authority not yet known, holding back a Close that comes before
// the body is read: net/http's HTTP/2 (from Go 1.27 under x/net's) closes
// the body of a request it could not get a connection for, and the body
// must still go over HTTP/1.1.
type heldBody struct {
	rc   io.ReadCloser
	mu   sync.Mutex
	read bool // Read was called: the body is the HTTP/2 attempt's
	held bool // Close was called before any Read
}

func (b *heldBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	b.read = true
	b.mu.Unlock()
	return b.rc.Read(p)
}

func (b *heldBody) Close() error {
	b.mu.Lock()
	if !b.read {
		b.held = true
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	return b.rc.Close()
}

// release reports whether the body is untouched and can be sent again
// (resend); otherwise it performs a Close it held back, and lets later
// ones through.
func (b *heldBody) release(resend bool) bool {
	b.mu.Lock()
	untouched, held := !b.read, b.held
	b.read = true
	b.mu.Unlock()
	if resend && untouched {
		return true
	}
	if held {
		b.rc.Close()
	}
	return false
}

// resend returns r ready to go again after an HTTP/2 attempt that never got
// a connection: with its body as it was (untouched, held back from a
// Close), or a fresh one from GetBody.
func resend(r *http.Request, body io.ReadCloser, hb *heldBody) (*http.Request, error) {
	switch {
	case body == nil || body == http.NoBody:
	case hb != nil && hb.release(true):
		r.Body = body
	case r.GetBody != nil:
		b, err := r.GetBody()
		if err != nil {
			return nil, err
		}
		r.Body = b
	default:
		return nil, fmt.Errorf("alert: %s no longer offers HTTP/2 and the request body cannot be sent again: %w", r.URL.Host, errNoH2)
	}
	return r, nil
}

// connTrace records the connection a request was given, through
// httptrace's GotConn. Only HTTP/1.1 requests carry one: net/http of Go
// 1.26 fills Response.TLS only for a *tls.Conn, and a failed request's
// alert may be only in the connection.
type connTrace struct {
	trace httptrace.ClientTrace
	mu    sync.Mutex
	conn  net.Conn
}

func (ct *connTrace) gotConn(info httptrace.GotConnInfo) {
	ct.mu.Lock()
	ct.conn = info.Conn
	ct.mu.Unlock()
}

func (ct *connTrace) get() net.Conn {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.conn
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t == nil || t.h1 == nil {
		return nil, errors.New("alert: Transport not made by NewTransport")
	}
	if req.URL == nil || req.URL.Scheme != "https" {
		return t.h1.RoundTrip(req)
	}
	if stockH2 {
		// net/http sets Response.TLS itself, also over HTTP/1.1 when
		// the caller's Config leaves h2 out (then dialH1 dials); a
		// proxied request is made as described in Transport.
		resp, err := t.h1.RoundTrip(req)
		if err != nil {
			return nil, t.explainH2(err, req)
		}
		// net/http puts a copy of the request there for a request
		// with a body on a kept HTTP/2 connection (Go 1.26 and 1.27);
		// the Transport promises the request itself.
		resp.Request = req
		return resp, nil
	}
	if t.h1.Proxy != nil {
		if u, err := t.h1.Proxy(req); err != nil || u != nil {
			// The stock path, see Transport: only an alert that
			// crypto/tls itself returned is found.
			resp, err := t.h1.RoundTrip(req)
			if err != nil {
				return nil, explain(err, nil)
			}
			return resp, nil
		}
	}
	// The URL's host as written, which needs no allocation: the same
	// server written two ways costs one extra handshake to learn that it
	// has no HTTP/2.
	authority := req.URL.Host
	p := t.proto(authority)
	if !t.useH2 || p == protoH1 {
		return t.roundTripH1(req, req, false, nil, nil)
	}
	// Over HTTP/2 the request goes as it is: no copy, no hook, so that a
	// kept connection costs what it costs x/net.
	r := req
	// To an authority not known yet, the request goes to the HTTP/2
	// transport with its body held back from a Close, so that it can still
	// go over HTTP/1.1 if the server has no HTTP/2.
	var hb *heldBody
	body := req.Body
	if p == protoUnknown && body != nil && body != http.NoBody {
		hb = &heldBody{rc: body}
		r = req.WithContext(req.Context())
		r.Body = hb
	}
	resp, err := t.h2.roundTrip(r)
	if err != nil && errors.Is(err, errNoH2) {
		// The HTTP/2 dial found out before the body was sent.
		t.setProto(authority, protoH1)
		return t.roundTripH1(req, r, true, body, hb)
	}
	if hb != nil {
		hb.release(false)
	}
	if err != nil {
		return nil, t.explainH2(err, req)
	}
	if p == protoUnknown {
		t.setProto(authority, protoH2)
	}
	// x/net set Response.TLS from the connection's ConnectionState.
	resp.Request = req
	return resp, nil
}

// roundTripH1 sends r over HTTP/1.1 with a hook that records its
// connection. When it follows an HTTP/2 attempt that never got a
// connection (fallback), body and hb are that attempt's, see resend; the
// body is set on the copy of r that carries the hook, never on the
// caller's request.
func (t *Transport) roundTripH1(req, r *http.Request, fallback bool, body io.ReadCloser, hb *heldBody) (*http.Response, error) {
	ct := new(connTrace)
	ct.trace.GotConn = ct.gotConn
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &ct.trace))
	if fallback {
		var err error
		if r, err = resend(r, body, hb); err != nil {
			return nil, err
		}
	}
	resp, err := t.h1.RoundTrip(r)
	conn := ct.get()
	if err != nil {
		return nil, explain(err, conn)
	}
	resp.Request = req
	if resp.TLS == nil {
		// net/http fills it in only for a *tls.Conn.
		if c, ok := conn.(*Conn); ok {
			resp.TLS = c.state()
		}
	}
	return resp, nil
}

// errNotEstablished is the text of the error HTTP/2 clients (x/net's and
// net/http's) return, unexported, when a new connection closed before the
// first request on it started; they drop the read loop's error with it.
const errNotEstablished = "http2: client conn could not be established"

// explainH2 is explain for an HTTP/2 request, which carries no hook: for
// HTTP/2's fixed error the alert comes from the connections dialed for
// HTTP/2 to the request's address (h2Alert).
func (t *Transport) explainH2(err error, req *http.Request) error {
	if !strings.Contains(err.Error(), errNotEstablished) {
		return explain(err, nil)
	}
	if a := t.h2Alert(h2Addr(req.URL)); a != nil {
		return &Error{Code: a.Code, Description: a.Description, Err: err}
	}
	return err
}

// h2Addr returns the address the HTTP/2 transport dials for u: the host
// and port, 443 when there is none, the host in ASCII.
func h2Addr(u *url.URL) string {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
	}
	for i := 0; i < len(host); i++ {
		if host[i] >= utf8.RuneSelf {
			// As x/net does; it leaves ASCII names alone.
			if a, err := idna.Lookup.ToASCII(host); err == nil && a != "" {
				host = a
			}
			break
		}
	}
	return net.JoinHostPort(host, port)
}

// CloseIdleConnections closes the idle connections of both protocols and
// forgets which servers do not speak HTTP/2.
func (t *Transport) CloseIdleConnections() {
	if t == nil || t.h1 == nil {
		return
	}
	t.h1.CloseIdleConnections()
	t.h2.closeIdle()
	t.mu.Lock()
	spares := t.spare
	t.spare = make(map[string]*spareConn)
	clear(t.h2Dials)
	t.protos.Store(new(map[string]proto))
	t.mu.Unlock()
	for _, s := range spares {
		s.timer.Stop()
		s.c.Close()
	}
}

// explain returns err as an *Error if it carries an alert, or if the
// connection the request was given had received one: when that
// connection dies before the first request on it starts, the HTTP/2
// client returns a fixed error and drops the read loop's alert.
func explain(err error, conn net.Conn) error {
	var ae *Error
	if errors.As(err, &ae) {
		return err
	}
	if code, ok := remoteAlert(err); ok {
		return newError(code, err)
	}
	if c, ok := conn.(*Conn); ok {
		if a := c.alert.Load(); a != nil {
			return &Error{Code: a.Code, Description: a.Description, Err: err}
		}
	}
	return err
}
