package alert_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/testbed"
)

// Server behaviours after the client's TLS 1.3 handshake.
const (
	modeAlert       = "alert"        // rejects the client certificate: unknown_ca
	modeSilent      = "silent"       // accepts, then neither sends nor closes
	modeCloseNotify = "close_notify" // accepts, sends close_notify and closes
	modeReset       = "reset"        // accepts, resets without any alert
)

// startMode starts a server with the given behaviour and returns a client
// whose writes can be made to fail, after a completed handshake.
func startMode(t *testing.T, mode string, probe time.Duration) (*alert.Conn, *faultConn) {
	t.Helper()
	p := testbed.SharedPKI(t)
	cert := &p.Client
	if mode == modeAlert {
		cert = &p.Untrusted
	}
	s := serveTLS(t, false, p.ServerConfig(tls.VersionTLS13), func(tc *tls.Conn) {
		if err := tc.Handshake(); err != nil {
			return
		}
		switch mode {
		case modeSilent:
			io.Copy(io.Discard, tc)
		case modeCloseNotify:
		case modeReset:
			tc.NetConn().(*net.TCPConn).SetLinger(0)
			tc.NetConn().Close()
		}
	})
	raw, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	fc := &faultConn{Conn: raw}
	c := alert.Wrap(tls.Client(fc, p.ClientConfig(cert, tls.VersionTLS13)), alert.WithProbeTimeout(probe))
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	return c, fc
}

func opErr(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, errno)}
}

// TestWriteErrorMapping checks, for every server behaviour and every kind of
// write error, whether Write reports an alert, and that the write's own
// error stays visible.
func TestWriteErrorMapping(t *testing.T) {
	errs := []struct {
		name   string
		err    error
		target error // what errors.Is must still find
		probes bool  // whether this error makes Conn look for an alert
	}{
		{"ECONNRESET", opErr("write", syscall.ECONNRESET), syscall.ECONNRESET, true},
		{"EPIPE", opErr("write", syscall.EPIPE), syscall.EPIPE, true},
		{"ECONNABORTED", opErr("write", syscall.ECONNABORTED), syscall.ECONNABORTED, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, io.ErrUnexpectedEOF, true},
		// A closed connection cannot be read: only an alert already seen
		// counts, and none was.
		{"closed", &net.OpError{Op: "write", Net: "tcp", Err: net.ErrClosed}, net.ErrClosed, false},
		{"timeout", &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}, os.ErrDeadlineExceeded, false},
		{"other", errors.New("boom"), nil, false},
	}
	modes := []string{modeAlert, modeSilent, modeCloseNotify, modeReset}
	for _, mode := range modes {
		for _, e := range errs {
			t.Run(mode+"/"+e.name, func(t *testing.T) {
				t.Parallel()
				c, fc := startMode(t, mode, 300*time.Millisecond)
				if mode == modeReset || mode == modeCloseNotify {
					time.Sleep(20 * time.Millisecond) // let the peer's close arrive
				}
				fc.failWrites(e.err)
				_, err := c.Write([]byte("request"))
				if err == nil {
					t.Fatal("Write succeeded")
				}
				var ae *alert.Error
				gotAlert := errors.As(err, &ae)
				wantAlert := mode == modeAlert && e.probes
				if gotAlert != wantAlert {
					t.Fatalf("Write error %q: alert found = %v, want %v", err, gotAlert, wantAlert)
				}
				if gotAlert && (ae.Code != 48 || ae.Description != "unknown certificate authority") {
					t.Errorf("alert = %d %q, want 48 unknown certificate authority", ae.Code, ae.Description)
				}
				if e.target != nil && !errors.Is(err, e.target) {
					t.Errorf("errors.Is(%q, %v) = false", err, e.target)
				}
				if e.target == nil && err.Error() != "boom" {
					t.Errorf("other error changed: %q", err)
				}
			})
		}
	}
}

// TestReadAlert checks that Read reports the alert as an *Error that still
// looks like crypto/tls's error, and that a later Write on the closed
// connection reports it too.
func TestReadAlert(t *testing.T) {
	c, _ := startMode(t, modeAlert, 0)
	_, err := c.Read(make([]byte, 10))
	var ae *alert.Error
	if !errors.As(err, &ae) || ae.Code != 48 {
		t.Fatalf("Read: %v, want alert 48", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" {
		t.Errorf("Read error lost crypto/tls's *net.OpError: %#v", err)
	}
	if _, err := c.Read(make([]byte, 10)); !errors.As(err, &ae) {
		t.Errorf("second Read: %v, want the alert again", err)
	}
	c.Close()
	_, err = c.Write([]byte("x"))
	if !errors.As(err, &ae) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want the alert and net.ErrClosed", err)
	}
}

// TestWriteWaitsForConcurrentRead is net/http's shape: a read loop is
// blocked in Read when the write fails.
func TestWriteWaitsForConcurrentRead(t *testing.T) {
	c, fc := startMode(t, modeAlert, time.Second)
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		readErr <- err
	}()
	time.Sleep(10 * time.Millisecond)
	fc.failWrites(opErr("write", syscall.EPIPE))
	_, err := c.Write([]byte("x"))
	var ae *alert.Error
	if !errors.As(err, &ae) || !errors.Is(err, syscall.EPIPE) {
		t.Errorf("Write: %v, want the alert and EPIPE", err)
	}
	if err := <-readErr; !errors.As(err, &ae) {
		t.Errorf("Read: %v, want the alert", err)
	}
}

// TestProbeKeepsData checks that application data a probe reads past is
// returned by the next Reads, in order.
func TestProbeKeepsData(t *testing.T) {
	p := testbed.SharedPKI(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 3000) // several records
	s := serveTLS(t, false, p.ServerConfig(tls.VersionTLS13), func(tc *tls.Conn) {
		if tc.Write(want); true {
			io.Copy(io.Discard, tc)
		}
	})
	raw, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	fc := &faultConn{Conn: raw}
	c := alert.Wrap(tls.Client(fc, p.ClientConfig(&p.Client, tls.VersionTLS13)), alert.WithProbeTimeout(200*time.Millisecond))
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 100)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatal(err)
	}
	fc.failWrites(opErr("write", syscall.ECONNRESET))
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Write: %v, want ECONNRESET", err)
	} else if _, ok := alert.FromError(err); ok {
		t.Fatalf("Write: %v: invented an alert", err)
	}
	rest := make([]byte, len(want)-len(head))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, rest); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(head, rest...), want) {
		t.Error("data read past by the probe came back altered")
	}
}

// TestRealNoAlert uses real sockets: the server accepts the client, then
// closes while the client is still sending, without a fatal alert. The
// client's error must stay the transport error.
func TestRealNoAlert(t *testing.T) {
	p := testbed.SharedPKI(t)
	closes := map[string]func(*tls.Conn){
		"RST from unread data": func(tc *tls.Conn) { tc.NetConn().Close() },
		"RST from SO_LINGER 0": func(tc *tls.Conn) {
			tc.NetConn().(*net.TCPConn).SetLinger(0)
			tc.NetConn().Close()
		},
		"close_notify, then RST": func(tc *tls.Conn) { tc.Close() },
	}
	for name, closeFn := range closes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := serveTLS(t, false, p.ServerConfig(tls.VersionTLS13), func(tc *tls.Conn) {
				if tc.Handshake() == nil {
					tc.Read(make([]byte, 1)) // some data, not all
					closeFn(tc)
				}
			})
			c := alert.Wrap(dialTLS(t, s.Addr, p.ClientConfig(&p.Client, tls.VersionTLS13)))
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 64<<10)
			var err error
			for i := 0; i < 1000 && err == nil; i++ {
				_, err = c.Write(buf)
			}
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
				t.Fatalf("Write: %v, want ECONNRESET or EPIPE", err)
			}
			if ae, ok := alert.FromError(err); ok {
				t.Fatalf("Write: %v: invented alert %d", err, ae.Code)
			}
		})
	}
}

func TestNil(t *testing.T) {
	if c := alert.Wrap(nil); c != nil {
		t.Errorf("Wrap(nil) = %v, want nil", c)
	}
	var c *alert.Conn
	if _, err := c.Read(nil); err == nil {
		t.Error("Read on nil *Conn succeeded")
	}
	if _, err := c.Write(nil); err == nil {
		t.Error("Write on nil *Conn succeeded")
	}
	if err := c.Close(); err == nil {
		t.Error("Close on nil *Conn succeeded")
	}
	if c.LocalAddr() != nil || c.RemoteAddr() != nil || c.NetConn() != nil {
		t.Error("nil *Conn has addresses")
	}
	var d *alert.Dialer
	if _, err := d.DialContext(t.Context(), "tcp", "127.0.0.1:1"); err == nil {
		t.Error("dial to a closed port succeeded")
	}
	if _, ok := alert.FromError(nil); ok {
		t.Error("FromError(nil) found an alert")
	}
}

// TestTransportProtocols checks that the Transport negotiates HTTP/2 when
// both sides offer it and HTTP/1.1 otherwise, fills in Response.TLS, and
// reuses one connection for sequential requests, like the stock transport.
func TestTransportProtocols(t *testing.T) {
	p := testbed.SharedPKI(t)
	tests := []struct {
		name           string
		server, client []string // ALPN offers; nil client: the default
		wantMajor      int
		wantALPN       string
	}{
		{"both offer h2", []string{"h2", "http/1.1"}, nil, 2, "h2"},
		{"server without h2", []string{"http/1.1"}, nil, 1, "http/1.1"},
		{"server without ALPN", nil, nil, 1, ""},
		{"client without h2", []string{"h2", "http/1.1"}, []string{"http/1.1"}, 1, "http/1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srvCfg := p.ServerConfig(0)
			srvCfg.NextProtos = tt.server
			s, ln := listen(t, false, srvCfg)
			var accepted atomic.Int32
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					io.WriteString(w, r.Proto)
				}),
				ConnState: func(_ net.Conn, cs http.ConnState) {
					if cs == http.StateNew {
						accepted.Add(1)
					}
				},
				ErrorLog: log.New(io.Discard, "", 0),
			}
			// Serve sets up HTTP/2 for connections that negotiated h2.
			go srv.Serve(ln)
			defer s.stop(t)
			defer srv.Close()

			cfg := p.ClientConfig(&p.Client, 0)
			cfg.NextProtos = tt.client
			client := alert.NewHTTPClient(cfg)
			defer client.CloseIdleConnections()
			for i := range 3 {
				var reused bool
				ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
					GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
				})
				req, _ := http.NewRequestWithContext(ctx, "POST", "https://"+s.Addr+"/", bytes.NewReader(make([]byte, 100<<10)))
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != tt.wantMajor || string(body) != resp.Proto {
					t.Errorf("request %d: client saw %s, server saw %s; want HTTP/%d on both sides", i, resp.Proto, body, tt.wantMajor)
				}
				if resp.TLS == nil || !resp.TLS.HandshakeComplete || resp.TLS.NegotiatedProtocol != tt.wantALPN {
					t.Errorf("request %d: Response.TLS = %+v, want a completed handshake with ALPN %q", i, resp.TLS, tt.wantALPN)
				}
				if resp.Request != req {
					t.Errorf("request %d: Response.Request is not the request sent", i)
				}
				if reused != (i > 0) {
					t.Errorf("request %d: connection reused = %v, want %v", i, reused, i > 0)
				}
			}
			if n := accepted.Load(); n != 1 {
				t.Errorf("server accepted %d connections for 3 sequential requests, want 1", n)
			}
		})
	}
}

// TestTransportRejectedFirstRequest: the server refuses the client's
// certificate, so every request is the first on a new connection; over
// HTTP/2 too it must fail with the alert, an *alert.Error that still
// wraps what the transport returned. In "dead before the request", a
// GotConn hook holds the request until the HTTP/2 read loop has read the
// alert and closed the connection, so the HTTP/2 client returns its fixed
// "client conn could not be established" and the alert must come from the
// connection.
func TestTransportRejectedFirstRequest(t *testing.T) {
	p := testbed.SharedPKI(t)
	addr := serveHTTP(t, false, p.ServerConfig(tls.VersionTLS13), http.NotFoundHandler())
	for _, hold := range []time.Duration{0, 200 * time.Millisecond} {
		name := "immediate"
		if hold > 0 {
			name = "dead before the request"
		}
		t.Run(name, func(t *testing.T) {
			client := alert.NewHTTPClient(p.ClientConfig(&p.Untrusted, tls.VersionTLS13))
			defer client.CloseIdleConnections()
			fixed := 0
			const n = 5
			for i := range n {
				err := heldGet(t, client, addr, hold)
				if err == nil {
					t.Fatal("the server accepted an untrusted certificate")
				}
				var ae *alert.Error
				if !errors.As(err, &ae) || ae.Code != 48 {
					t.Fatalf("GET %d: %v, want the unknown_ca alert as an *alert.Error", i, err)
				}
				var ue *url.Error
				if !errors.As(err, &ue) || ae.Err == nil {
					t.Errorf("GET %d: %#v: the transport's error is not kept", i, err)
				}
				if isFixedH2(ae.Err) {
					fixed++
				}
			}
			t.Logf("%d of %d errors were HTTP/2's fixed one", fixed, n)
			if hold > 0 && fixed == 0 {
				t.Errorf("the premise failed: in none of %d trials did the connection die before the request", n)
			}
		})
	}
}

// heldGet GETs addr's root through client, holding the request for hold once
// it has a connection: long enough, and the HTTP/2 read loop has read the
// server's alert and closed the connection before the request is written.
// It returns the request's error.
func heldGet(t *testing.T, client *http.Client, addr string, hold time.Duration) error {
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { time.Sleep(hold) },
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/", nil)
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

// isFixedH2 reports whether err is the fixed error HTTP/2 returns when the
// first request on a new connection fails, which drops the alert itself.
func isFixedH2(err error) bool {
	return err != nil && strings.Contains(err.Error(), "client conn could not be established")
}

// TestTransportRejectedConcurrent: first requests from several goroutines
// through one Transport, to a server that refuses the client's
// certificate, each held like "dead before the request" above, so that
// connections to the same address are dialed, rejected and closed while
// other requests look for their alert. Every error must carry it.
func TestTransportRejectedConcurrent(t *testing.T) {
	p := testbed.SharedPKI(t)
	addr := serveHTTP(t, false, p.ServerConfig(tls.VersionTLS13), http.NotFoundHandler())
	client := alert.NewHTTPClient(p.ClientConfig(&p.Untrusted, tls.VersionTLS13))
	defer client.CloseIdleConnections()
	const workers, each = 4, 5
	var fixed, alerts atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				// Alternate holds, so that some requests find their
				// connection dead and others race the read loop.
				hold := time.Duration((w+i)%2) * 50 * time.Millisecond
				err := heldGet(t, client, addr, hold)
				if err == nil {
					t.Error("the server accepted an untrusted certificate")
					return
				}
				var ae *alert.Error
				if !errors.As(err, &ae) || ae.Code != 48 {
					t.Errorf("worker %d, GET %d: %v, want the unknown_ca alert as an *alert.Error", w, i, err)
					continue
				}
				alerts.Add(1)
				if isFixedH2(ae.Err) {
					fixed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d of %d errors reported the alert, %d of them over HTTP/2's fixed error", alerts.Load(), workers*each, fixed.Load())
	if fixed.Load() == 0 {
		t.Errorf("the premise failed: no request got HTTP/2's fixed error")
	}
}

// TestDialerDial: a Dialer with its own Dial function runs TLS over the
// connection it makes, names the server after the dialed host, and still
// reports a rejection as an *Error.
func TestDialerDial(t *testing.T) {
	p := testbed.SharedPKI(t)
	s := serveTLS(t, false, p.ServerConfig(tls.VersionTLS12), rejecting)
	defer s.stop(t)
	var dials int
	d := &alert.Dialer{
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials++
			var nd net.Dialer
			return nd.DialContext(ctx, network, addr)
		},
		Config: p.ClientConfig(&p.Untrusted, tls.VersionTLS12),
	}
	d.Config.ServerName = ""
	_, port, _ := net.SplitHostPort(s.Addr)
	_, err := d.DialContext(t.Context(), "tcp", net.JoinHostPort("localhost", port))
	var ae *alert.Error
	if !errors.As(err, &ae) || ae.Code != 48 {
		t.Errorf("DialContext = %v, want the unknown_ca alert as an *alert.Error", err)
	}
	if dials != 1 {
		t.Errorf("Dial called %d times, want 1", dials)
	}
	d.Dial = func(context.Context, string, string) (net.Conn, error) { return nil, io.ErrClosedPipe }
	if _, err := d.DialContext(t.Context(), "tcp", s.Addr); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("DialContext with a failing Dial = %v, want its error", err)
	}
}

// silentServer accepts TCP connections and never answers: a ClientHello
// gets no reply.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// TestTimeouts: a server that never answers the ClientHello, and a dial
// that never completes, end within the Dialer's bounds with a timeout
// error, through the Dialer and through the HTTP client alike.
func TestTimeouts(t *testing.T) {
	p := testbed.SharedPKI(t)
	addr := silentServer(t)
	const bound = 300 * time.Millisecond
	hang := func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	cfg := p.ClientConfig(&p.Client, 0)
	tests := []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"Dialer handshake", func(ctx context.Context) error {
			_, err := (&alert.Dialer{Config: cfg, HandshakeTimeout: bound}).DialContext(ctx, "tcp", addr)
			return err
		}},
		{"Dialer dial", func(ctx context.Context) error {
			_, err := (&alert.Dialer{Config: cfg, Dial: hang, DialTimeout: bound}).DialContext(ctx, "tcp", addr)
			return err
		}},
		{"Transport handshake", func(ctx context.Context) error {
			c := &http.Client{Transport: alert.NewTransport(&alert.Dialer{Config: cfg, HandshakeTimeout: bound})}
			defer c.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/", nil)
			_, err := c.Do(req)
			return err
		}},
		{"Transport HTTP/1.1 handshake", func(ctx context.Context) error {
			cfg := cfg.Clone()
			cfg.NextProtos = []string{"http/1.1"}
			c := &http.Client{Transport: alert.NewTransport(&alert.Dialer{Config: cfg, HandshakeTimeout: bound})}
			defer c.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/", nil)
			_, err := c.Do(req)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The context only keeps a broken bound from hanging the test.
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			start := time.Now()
			err := tt.do(ctx)
			took := time.Since(start)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("after %v: %v, want a timeout (net.Error with Timeout, errors.Is context.DeadlineExceeded)", took, err)
			}
			if took < bound || took > bound+5*time.Second {
				t.Errorf("gave up after %v, want about %v", took, bound)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		if alert.DefaultHandshakeTimeout != 10*time.Second || alert.DefaultDialTimeout != 30*time.Second {
			t.Errorf("defaults %v, %v; want net/http's DefaultTransport's 10 s and 30 s",
				alert.DefaultHandshakeTimeout, alert.DefaultDialTimeout)
		}
		if testing.Short() {
			t.Skip("skipping the 10 s wait for the default handshake timeout in -short mode")
		}
		t.Parallel()
		start := time.Now()
		_, err := (&alert.Dialer{Config: cfg}).DialContext(context.Background(), "tcp", addr)
		var ne net.Error
		if took := time.Since(start); !errors.As(err, &ne) || !ne.Timeout() ||
			took < alert.DefaultHandshakeTimeout || took > alert.DefaultHandshakeTimeout+5*time.Second {
			t.Errorf("zero Dialer: %v after %v, want a timeout after %v", err, took, alert.DefaultHandshakeTimeout)
		}
	})
}

// TestTransportContext: a request whose server never answers ends with its
// context, over HTTP/2 and HTTP/1.1.
func TestTransportContext(t *testing.T) {
	p := testbed.SharedPKI(t)
	release := make(chan struct{})
	addr := serveHTTP(t, false, p.ServerConfig(0), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer close(release)
	for _, protos := range [][]string{nil, {"http/1.1"}} {
		cfg := p.ClientConfig(&p.Client, 0)
		cfg.NextProtos = protos
		client := alert.NewHTTPClient(cfg)
		const bound = 300 * time.Millisecond
		ctx, cancel := context.WithTimeout(t.Context(), bound)
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/", nil)
		start := time.Now()
		resp, err := client.Do(req)
		took := time.Since(start)
		cancel()
		if err == nil {
			resp.Body.Close()
			t.Fatalf("offering %v: the request succeeded", protos)
		}
		if !errors.Is(err, context.DeadlineExceeded) || took > bound+5*time.Second {
			t.Errorf("offering %v: %v after %v, want the context's deadline after about %v", protos, err, took, bound)
		}
		client.CloseIdleConnections()
	}
}

// onceBody is a request body that cannot be read after Close, as a pipe or
// a file: net/http cannot rewind it (no GetBody).
type onceBody struct {
	r      io.Reader
	closed atomic.Bool
}

func (b *onceBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errors.New("read after Close")
	}
	return b.r.Read(p)
}

func (b *onceBody) Close() error { b.closed.Store(true); return nil }

// TestTransportFallbackBody: the first request to a server without HTTP/2
// goes to the HTTP/1.1 transport after the HTTP/2 dial found out; a body
// that cannot be rewound must arrive whole, and be closed once sent.
func TestTransportFallbackBody(t *testing.T) {
	p := testbed.SharedPKI(t)
	srvCfg := p.ServerConfig(0)
	srvCfg.NextProtos = []string{"http/1.1"}
	s, ln := listen(t, false, srvCfg)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	defer s.stop(t)
	defer srv.Close()
	client := alert.NewHTTPClient(p.ClientConfig(&p.Client, 0))
	defer client.CloseIdleConnections()
	body := &onceBody{r: bytes.NewReader(make([]byte, 100<<10))}
	req, _ := http.NewRequestWithContext(t.Context(), "POST", "https://"+s.Addr+"/", body)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "102400" || resp.ProtoMajor != 1 {
		t.Errorf("server got %s bytes over %s, want 102400 over HTTP/1.1", got, resp.Proto)
	}
	if !body.closed.Load() {
		t.Error("the request body was not closed")
	}
}

// TestTransportServerDropsH2: a server that spoke HTTP/2 stops offering it;
// the next connection is dialed for HTTP/2, gets HTTP/1.1, and the request
// goes over HTTP/1.1 with its body sent again from GetBody.
func TestTransportServerDropsH2(t *testing.T) {
	p := testbed.SharedPKI(t)
	var dropped atomic.Bool
	base := p.ServerConfig(0)
	srvCfg := base.Clone()
	srvCfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.NextProtos = []string{"h2", "http/1.1"}
		if dropped.Load() {
			c.NextProtos = []string{"http/1.1"}
		}
		return c, nil
	}
	s, ln := listen(t, false, srvCfg)
	var mu sync.Mutex
	var conns []net.Conn
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s %d", r.Proto, n)
		}),
		ConnState: func(c net.Conn, cs http.ConnState) {
			if cs == http.StateNew {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go srv.Serve(ln)
	defer s.stop(t)
	defer srv.Close()
	client := alert.NewHTTPClient(p.ClientConfig(&p.Client, 0))
	defer client.CloseIdleConnections()
	post := func() (string, error) {
		resp, err := client.Post("https://"+s.Addr+"/", "application/octet-stream", bytes.NewReader(make([]byte, 1000)))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	if got, err := post(); got != "HTTP/2.0 1000" {
		t.Fatalf("first request: server saw %q (%v), want HTTP/2.0 and 1000 bytes", got, err)
	}
	dropped.Store(true)
	mu.Lock()
	for _, c := range conns {
		c.Close() // the HTTP/2 connection goes; the next one is dialed anew
	}
	mu.Unlock()
	// A request may still be given the closed connection before the client
	// has read its end, and fail as with the stock transport; the one after
	// it dials.
	var got string
	var errs []error
	for range 3 {
		var err error
		if got, err = post(); err == nil {
			break
		}
		errs = append(errs, err)
	}
	if got != "HTTP/1.1 1000" || len(errs) > 1 {
		t.Errorf("after the server dropped h2: server saw %q after errors %v, want HTTP/1.1 and 1000 bytes after at most one", got, errs)
	}
	for _, err := range errs {
		if strings.Contains(err.Error(), "h2") {
			t.Errorf("the fallback to HTTP/1.1 failed: %v", err)
		}
	}
}
