// Package testbed holds what only linger's tests import: counting and
// waiting for descriptors, skipping without root, real TLS servers (Go's,
// nginx, HAProxy, Apache and Caddy as installed, and small OpenJDK, Node,
// Python and openssl servers), a process-wide PKI,
// and a capture that counts the resets on the wire. The shipped command
// does not link it; what the command shares with the tests lives in
// internal/pki and internal/netns.
package testbed

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/linger-go/linger/internal/proc"
)

// TB is the part of testing.TB that RequireRoot needs.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
}

// RequireRoot skips t unless the process is root on Linux, saying what is
// skipped and why.
func RequireRoot(t TB, what string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("skipping %s: needs Linux network namespaces", what)
	}
	if os.Geteuid() != 0 {
		t.Skipf("skipping %s: needs root for network namespaces and nftables (CI runs as root)", what)
	}
}

// StartPoller makes the runtime's network poller open its descriptors now
// (on Linux an epoll set and an eventfd, which it keeps for the process's
// life), so that a test counting descriptors before and after its sockets
// does not take them for a leak when it is the first to use the network.
// Each TestMain of a package that counts descriptors calls it before
// m.Run: under go test the test log's file starts the poller early, but a
// test binary run directly, one test at a time, does not.
func StartPoller() {
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
}

// WaitFDs waits up to 5 s for the process's descriptor count to drop back to
// before, and reports an error on t if it does not: a descriptor closed by
// another goroutine, or by the runtime, may take a moment to go.
func WaitFDs(t interface {
	Helper()
	Errorf(format string, args ...any)
}, before int) {
	t.Helper()
	if before < 0 {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := proc.OpenFDs()
		if after <= before {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("descriptors: %d before, %d after", before, after)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckFDs makes t fail if it leaves more descriptors open than it found.
// Call it first in a test, so that its cleanup runs after every other.
func CheckFDs(t interface {
	Helper()
	Errorf(format string, args ...any)
	Cleanup(func())
}) {
	before := proc.OpenFDs()
	t.Cleanup(func() { WaitFDs(t, before) })
}

// ServeTLS serves TLS with cfg on ln until the test ends. Each accepted
// connection goes to handle as a *tls.Conn whose handshake has not run yet,
// with a 10 s deadline; nil handle completes the handshake and then reads
// and discards until an error. The connection is closed when handle
// returns, by whatever ln's connections do on Close: a plain close, or a
// lingering one through linger's Listener. ServeTLS returns ln's address;
// when the test ends it closes ln and waits for every connection's
// goroutine, so register anything that must outlive them (a Closer's
// Shutdown) with t.Cleanup before calling it.
func ServeTLS(t interface {
	Helper()
	Cleanup(func())
}, ln net.Listener, cfg *tls.Config, handle func(*tls.Conn)) string {
	t.Helper()
	if handle == nil {
		handle = func(tc *tls.Conn) {
			if tc.Handshake() == nil {
				io.Copy(io.Discard, tc)
			}
		}
	}
	Serve(t, ln, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		handle(tc)
		tc.Close()
	})
	return ln.Addr().String()
}

// ServeHTTPS runs net/http's ServeTLS with cfg and handler on ln until the
// test ends, its error log (a handshake error per rejected client)
// discarded, and returns ln's address. Closing connections is ln's: a
// plain close, or a lingering one through linger's Listener.
func ServeHTTPS(t interface {
	Helper()
	Cleanup(func())
}, ln net.Listener, cfg *tls.Config, handler http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: handler, TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// Serve accepts connections on ln until the test ends, and runs handle on
// each in a goroutine of its own; handle owns the connection. When the test
// ends Serve closes ln and waits for the accept loop and every handle to
// return, so no goroutine outlives the test.
func Serve(t interface{ Cleanup(func()) }, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
}

// A Lingerer is what Linger needs of a *linger.Closer. (testbed cannot
// import package linger, whose own tests import testbed.)
type Lingerer interface {
	Listener(net.Listener) net.Listener
	Shutdown(context.Context) error
}

// Linger returns ln wrapped by lc, so that the connections it accepts linger
// when closed, and shuts lc down when the test ends. Cleanups run last
// registered first, so a server started on the returned listener afterwards
// (ServeTLS) stops before lc shuts down; the test fails if lc then has to
// cut lingering connections short.
func Linger(t interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
}, lc Lingerer, ln net.Listener) net.Listener {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := lc.Shutdown(ctx); err != nil {
			t.Errorf("linger shutdown: %v", err)
		}
	})
	return lc.Listener(ln)
}
