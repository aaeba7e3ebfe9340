package linger

import (
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/backendsel"
)

// Odd callers and odd sockets: what Close does with them.

// TestCloseNil: nil connections, of any type, are an error, not a panic.
func TestCloseNil(t *testing.T) {
	h := newHarness(t, Config{}, false)
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
	h := newHarness(t, Config{}, false)
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
				var started sync.WaitGroup
				started.Add(1)
				go func() {
					started.Done()
					buf := make([]byte, 64<<10)
					for {
						if _, err := srv.Write(buf); err != nil {
							errc <- err
							return
						}
					}
				}()
				started.Wait()
				time.Sleep(5 * time.Millisecond) // let Write block on a full send buffer
				h.Close(srv)
				select {
				case err := <-errc:
					if !errors.Is(err, net.ErrClosed) {
						others[summarize(err)]++
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

// TestPeerAlreadyGone: a connection whose peer closed, and then reset the
// bytes we sent after its close (as a client does to a server's TLS
// close_notify after it has closed), has nothing left to linger for. That
// is a clean outcome, not a plain close with an error.
func TestPeerAlreadyGone(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{}, be.portable)
			srv, cli := pair(t, listen(t), nil)
			cli.Close()
			srv.Read(make([]byte, 1)) // EOF: the peer closed
			srv.Write([]byte("close_notify, say"))
			// Wait for the peer's reset to end the connection.
			deadline := time.Now().Add(5 * time.Second)
			for tcpState(t, srv) != tcpClose {
				if time.Now().After(deadline) {
					t.Fatal("the peer did not reset the connection")
				}
				time.Sleep(time.Millisecond)
			}
			if err := h.Close(srv); err != nil {
				t.Errorf("Close = %v", err)
			}
			r := h.next(t, 5*time.Second)
			if r.Outcome != PeerClosed || r.Err != nil {
				t.Errorf("report %v %v, want %v and no error", r.Outcome, r.Err, PeerClosed)
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
