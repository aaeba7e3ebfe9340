package linger

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/backendsel"
	"github.com/linger-go/linger/internal/connerr"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
	"go.uber.org/goleak"
)

// TestMain lets LINGER_BACKEND=portable run the tests that use New, the
// Examples among them, on the portable backend: New itself does not read
// the environment.
func TestMain(m *testing.M) {
	backendsel.Portable.Store(os.Getenv("LINGER_BACKEND") == "portable")
	testbed.StartPoller()
	goleak.VerifyTestMain(m)
}

// backends lists the engines every behaviour test runs against.
var backends = []struct {
	name     string
	portable bool
}{
	{"loop", false},
	{"portable", true},
}

// selectedPortable is the backend for tests that run on one only: the
// portable backend when LINGER_BACKEND=portable, the platform's otherwise.
// Tests of what only the event loop sees pass false instead.
func selectedPortable() bool { return backendsel.Portable.Load() }

// newCountedHarness is newHarness for a test that must give back every
// descriptor it opens: the count is taken first, so its check runs after
// the Closer's and the sockets' cleanups, and waits a moment for
// descriptors that the runtime or another goroutine closes late.
func newCountedHarness(t *testing.T, cfg Config, portable bool) *harness {
	t.Helper()
	fds := proc.OpenFDs()
	t.Cleanup(func() { testbed.WaitFDs(t, fds) })
	return newHarness(t, cfg, portable)
}

// harness is a Closer under test with its reports collected.
type harness struct {
	*Closer
	reports chan Report
}

func newHarness(t *testing.T, cfg Config, portable bool) *harness {
	t.Helper()
	h := &harness{reports: make(chan Report, 1024)}
	cfg.OnClose = func(r Report) { h.reports <- r }
	c, err := newCloser(cfg, portable)
	if err != nil {
		t.Fatal(err)
	}
	h.Closer = c
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown at cleanup: %v", err)
		}
	})
	return h
}

// next waits for the next report.
func (h *harness) next(t *testing.T, within time.Duration) Report {
	t.Helper()
	select {
	case r := <-h.reports:
		return r
	case <-time.After(within):
		t.Fatalf("no report within %v", within)
		return Report{}
	}
}

// listen returns a loopback TCP listener closed at the end of the test.
func listen(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// pair returns the two ends of a loopback TCP connection, the client's
// bound to local (nil: any); the client end is closed at the end of the
// test.
func pair(t *testing.T, ln *net.TCPListener, local net.IP) (server, client *net.TCPConn) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c.(*net.TCPConn)
}

// accepted dials ln, a Closer's Listener, and returns the client's end and
// the connection ln accepted, which must be a *Conn. The client's end is
// closed at the end of the test; the accepted one is the caller's.
func accepted(t *testing.T, ln net.Listener) (client net.Conn, conn *Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn, ok := a.(*Conn)
	if !ok {
		a.Close()
		t.Fatalf("Accept returned %T, want *linger.Conn", a)
	}
	return c, conn
}

// send writes n bytes (0: until an error) to c in the background, 16 KiB at
// a time with a pause between writes; the returned function stops it and
// waits.
func send(c net.Conn, n int, pause time.Duration) (stop func()) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 16<<10)
		for sent := 0; n == 0 || sent < n; sent += len(buf) {
			select {
			case <-done:
				return
			default:
			}
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := c.Write(buf); err != nil && !connerr.IsTimeout(err) {
				return
			}
			time.Sleep(pause)
		}
	}()
	return func() { close(done); wg.Wait() }
}
