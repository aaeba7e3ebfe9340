package linger

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Conn embeds *net.TCPConn, so what servers look for on an accepted
// *net.TCPConn (sendfile through ReadFrom, CloseWrite, keep-alive, raw
// access) stays visible through the wrapper. The compiler checks it: a Conn
// that stopped embedding, or hid one of these, would not build.
var _ interface {
	net.Conn
	io.ReaderFrom
	io.WriterTo
	syscall.Conn
	CloseWrite() error
	CloseRead() error
	SetKeepAlive(bool) error
	SetKeepAlivePeriod(time.Duration) error
	SetNoDelay(bool) error
	SetLinger(int) error
	SetReadBuffer(int) error
	SetWriteBuffer(int) error
	MultipathTCP() (bool, error)
	File() (*os.File, error)
} = (*Conn)(nil)

// TestListenerKeepsTCPConn: the listener hands out *Conn, and its ReadFrom
// is the *net.TCPConn's, so a file is sent whole (by sendfile) and the
// connection then lingers.
func TestListenerKeepsTCPConn(t *testing.T) {
	h := newHarness(t, Config{}, selectedPortable())
	ln := h.Listener(listen(t))
	client, conn := accepted(t, ln)

	// ReadFrom a file: the sendfile path.
	path := filepath.Join(t.TempDir(), "f")
	want := strings.Repeat("sendfile ", 100000)
	os.WriteFile(path, []byte(want), 0o600)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	go func() {
		conn.ReadFrom(f) // the embedded *net.TCPConn's: sendfile
		conn.Close()
	}()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != want {
		t.Fatalf("read %d bytes, err %v; want %d bytes and EOF", len(got), err, len(want))
	}
	client.Close()
	if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed {
		t.Errorf("outcome %v, want %v", r.Outcome, PeerClosed)
	}
}

// TestListenerPassesOtherConns: a listener of another kind hands out its own
// connections untouched.
func TestListenerPassesOtherConns(t *testing.T) {
	h := newHarness(t, Config{}, selectedPortable())
	sock := filepath.Join(t.TempDir(), "s")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln := h.Listener(ul)
	defer ln.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := conn.(*net.UnixConn); !ok {
		t.Errorf("Accept returned %T, want the *net.UnixConn itself", conn)
	}
	conn.Close()
}

// TestStats: counters per outcome, bytes and the hold-time histogram, and
// their JSON form.
func TestStats(t *testing.T) {
	h := newHarness(t, Config{IdleTimeout: 100 * time.Millisecond}, selectedPortable())
	ln := listen(t)
	srv, cli := pair(t, ln, nil)
	cli.Write(make([]byte, 1000))
	h.Close(srv)
	cli.Close()
	h.next(t, 5*time.Second)
	srv2, _ := pair(t, ln, nil)
	h.Close(srv2)
	h.next(t, 5*time.Second)
	h.Close(pipeConn{nopConn{}})
	h.next(t, 5*time.Second)

	st := h.Stats()
	if st.Lingering != 0 || st.Outcomes[PeerClosed] != 1 || st.Outcomes[Idle] != 1 || st.Outcomes[Plain] != 1 {
		t.Errorf("stats %+v, want one each of peer_closed, idle, plain", st)
	}
	if st.Discarded != 1000 {
		t.Errorf("discarded %d, want 1000", st.Discarded)
	}
	if st.Hold.Count != 3 || st.Hold.Counts[len(st.Hold.Counts)-1] != 3 {
		t.Errorf("hold histogram %+v, want 3 observations", st.Hold)
	}
	for i := 1; i < len(st.Hold.Counts); i++ {
		if st.Hold.Counts[i] < st.Hold.Counts[i-1] {
			t.Errorf("hold histogram not cumulative: %v", st.Hold.Counts)
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"peer_closed":1`, `"idle":1`, `"discarded_bytes":1000`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
}

// nopConn is a non-TCP connection whose methods do nothing.
type nopConn struct{ net.Conn }

func (nopConn) Close() error         { return nil }
func (nopConn) RemoteAddr() net.Addr { return nil }

// oddListener answers Accept with whatever it is given: an odd caller's
// listener, not a network.
type oddListener struct {
	net.Listener
	conn net.Conn
	err  error
}

func (l *oddListener) Accept() (net.Conn, error) { return l.conn, l.err }
func (l *oddListener) Close() error              { return nil }
func (l *oddListener) Addr() net.Addr            { return &net.TCPAddr{} }

// TestListenerOddInner: an inner listener that returns an error with a nil
// *net.TCPConn, or a connection and an error together, has its error
// passed on, and no Conn wraps a nil connection.
func TestListenerOddInner(t *testing.T) {
	h := newHarness(t, Config{}, selectedPortable())
	errAccept := errors.New("accept failed")
	srv, cli := pair(t, listen(t), nil)
	for _, tc := range []struct {
		name     string
		conn     net.Conn
		err      error
		wantConn bool // a *Conn around srv
		wantNil  bool // a nil interface
	}{
		{"typed nil with error", (*net.TCPConn)(nil), errAccept, false, true},
		{"nil with error", nil, errAccept, false, true},
		{"conn with error", srv, errAccept, true, false},
		{"typed nil without error", (*net.TCPConn)(nil), nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := h.Listener(&oddListener{conn: tc.conn, err: tc.err})
			conn, err := ln.Accept()
			if err != tc.err {
				t.Errorf("Accept error %v, want %v", err, tc.err)
			}
			if c, ok := conn.(*Conn); ok && c.TCPConn == nil {
				t.Fatalf("Accept returned a Conn around nil")
			}
			if _, ok := conn.(*Conn); ok != tc.wantConn {
				t.Errorf("Accept returned %T, want a *linger.Conn: %v", conn, tc.wantConn)
			}
			if (conn == nil) != tc.wantNil {
				t.Errorf("Accept returned %#v, want nil: %v", conn, tc.wantNil)
			}
		})
	}
	// What the wrapped connection that came with an error does when closed.
	h.Listener(&oddListener{conn: srv, err: errAccept}).Accept()
	if err := (&Conn{TCPConn: srv, c: h.Closer}).Close(); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed {
		t.Errorf("outcome %v, want %v", r.Outcome, PeerClosed)
	}

	// http.Server.Serve gets the error, and returns it, instead of
	// panicking on a connection with nothing inside.
	srvHTTP := &http.Server{Handler: http.NotFoundHandler()}
	err := srvHTTP.Serve(h.Listener(&oddListener{conn: (*net.TCPConn)(nil), err: errAccept}))
	if err != errAccept {
		t.Errorf("Serve = %v, want %v", err, errAccept)
	}
	var zero *Conn
	if err := zero.Close(); !errors.Is(err, ErrNilConn) {
		t.Errorf("(*Conn)(nil).Close() = %v, want ErrNilConn", err)
	}
}
