package alert_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
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

// TestHTTPClientAccepted checks that NewHTTPClient works against a server
// that accepts it, and records what net/http does with a wrapped conn.
func TestHTTPClientAccepted(t *testing.T) {
	p := testbed.SharedPKI(t)
	for _, h2 := range []bool{false, true} {
		srvCfg := p.ServerConfig(0)
		if h2 {
			srvCfg.NextProtos = []string{"h2", "http/1.1"}
		}
		s, ln := listen(t, false, srvCfg)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, r.Proto)
		})}
		go srv.Serve(ln)
		client := alert.NewHTTPClient(p.ClientConfig(&p.Client, 0))
		resp, err := client.Post("https://"+s.Addr+"/", "application/octet-stream", bytes.NewReader(make([]byte, 1<<20)))
		if err != nil {
			t.Fatalf("h2 offered %v: %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("server offers h2: %v: status %d, server saw %s, client saw %s, Response.TLS set: %v",
			h2, resp.StatusCode, body, resp.Proto, resp.TLS != nil)
		if resp.ProtoMajor != 1 || string(body) != "HTTP/1.1" {
			t.Errorf("protocol: client %s, server %s; want HTTP/1.1", resp.Proto, body)
		}
		client.CloseIdleConnections()
		srv.Close()
		s.stop(t)
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
