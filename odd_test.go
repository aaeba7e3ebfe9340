package linger

import (
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/backendsel"
	"github.com/linger-go/linger/internal/connerr"
)

// Odd callers and odd sockets: what Close does with them.

// TestCloseNil: nil connections, of any type, are an error, not a panic.
func TestCloseNil(t *testing.T) {
	h := newHarness(t, Config{}, selectedPortable())
	for _, conn := range []net.Conn{
		nil,
		(*net.TCPConn)(nil),
		(*Conn)(nil),
		&Conn{},
		(*tls.Conn)(nil),
		tls.Server(nil, &tls.Config{}),
	} {
		if err := h.Close(conn); !errors.Is(err, ErrNilConn) {
			t.Errorf("Close(%#v) = %v, want ErrNilConn", conn, err)
		}
	}
	if st := h.Stats(); st.Hold.Count != 0 {
		t.Errorf("nil connections counted: %+v", st.Outcomes)
	}
}

// TestNotTCPCountedOnce: a connection that is not TCP is counted when its
// Close succeeds, so closing it twice counts it once.
func TestNotTCPCountedOnce(t *testing.T) {
	h := newHarness(t, Config{}, selectedPortable())
	sock := filepath.Join(t.TempDir(), "s")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ul.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(s); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(s); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if n := h.Stats().Outcomes[Plain]; n != 1 {
		t.Errorf("%d plain closes counted, want 1", n)
	}
}

// TestBlockedWriteGetsErrClosed: a goroutine blocked in Write on the
// handed-off connection (the peer does not read) returns net.ErrClosed, as
// after a plain Close, and not the EPIPE of the shutdown that follows.
func TestBlockedWriteGetsErrClosed(t *testing.T) {
	const trials = 40
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{}, be.portable)
			ln := listen(t)
			others := map[string]int{}
			for range trials {
				srv, cli := pair(t, ln, nil)
				srv.SetWriteBuffer(16 << 10)
				cli.SetReadBuffer(16 << 10)
				errc := make(chan error, 1)
				go writeUntilError(srv, errc)
				// The peer does not read: Write parks in the poller once
				// the buffers are full. Only a parked Write tests the
				// wake-up.
				waitParked(t, "linger.writeUntilError")
				h.Close(srv)
				select {
				case err := <-errc:
					if !errors.Is(err, net.ErrClosed) {
						others[connerr.Name(err)]++
					}
				case <-time.After(5 * time.Second):
					t.Fatal("blocked Write did not return")
				}
				cli.SetLinger(0)
				cli.Close()
				h.next(t, 5*time.Second)
			}
			if len(others) > 0 {
				t.Errorf("blocked Write returned other errors than net.ErrClosed: %v (of %d trials)", others, trials)
			}
		})
	}
}

// TestNewIgnoresEnvironment: a library does not switch engines on an
// environment variable; only this module's code (TestMain here, the bench
// command) selects the portable backend.
func TestNewIgnoresEnvironment(t *testing.T) {
	was := backendsel.Portable.Load()
	defer backendsel.Portable.Store(was)
	t.Setenv("LINGER_BACKEND", "portable")
	for _, sel := range []bool{false, true} {
		backendsel.Portable.Store(sel)
		c, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		_, isPortable := c.be.(portable)
		if want := sel || runtime.GOOS != "linux"; isPortable != want {
			t.Errorf("selected portable %v, LINGER_BACKEND=portable: New built a portable backend: %v, want %v", sel, isPortable, want)
		}
	}
}

// writeUntilError writes to c until a write fails and sends that error; it
// is a named function so that waitParked can find its goroutine.
func writeUntilError(c net.Conn, errc chan<- error) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			errc <- err
			return
		}
	}
}
