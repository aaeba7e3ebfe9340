package alert_test

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/linger-go/linger"
)

// server is a TLS server on loopback that requires a client certificate
// from the test CA.
type server struct {
	Addr string
	ln   net.Listener
	lc   *linger.Closer
	wg   sync.WaitGroup
}

// listen starts a TLS listener. With lingering true, accepted connections
// linger when closed (linger.Closer.Listener); otherwise they close at once.
func listen(t testing.TB, lingering bool, cfg *tls.Config) (*server, net.Listener) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{Addr: tcp.Addr().String()}
	var base net.Listener = tcp
	if lingering {
		if s.lc, err = linger.New(linger.Config{}); err != nil {
			t.Fatal(err)
		}
		base = s.lc.Listener(tcp)
	}
	s.ln = tls.NewListener(base, cfg)
	return s, s.ln
}

// stop closes the listener, waits for handlers, and ends lingering.
// serveHTTP serves handler over TLS with cfg, offering HTTP/2 and HTTP/1.1,
// until the test ends, and returns the server's address. With lingering
// true its connections linger when closed, as in listen.
func serveHTTP(t testing.TB, lingering bool, cfg *tls.Config, handler http.Handler) string {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	s, ln := listen(t, lingering, cfg)
	srv := &http.Server{
		Handler:  handler,
		ErrorLog: log.New(io.Discard, "", 0), // "TLS handshake error" on every rejection
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		s.stop(t)
	})
	return s.Addr
}

func (s *server) stop(t testing.TB) {
	t.Helper()
	s.ln.Close()
	s.wg.Wait()
	if s.lc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.lc.Shutdown(ctx); err != nil {
			t.Errorf("linger shutdown: %v", err)
		}
	}
}

// serveTLS starts a server that runs handle on every accepted connection
// and closes the connection when handle returns.
func serveTLS(t testing.TB, lingering bool, cfg *tls.Config, handle func(*tls.Conn)) *server {
	t.Helper()
	s, ln := listen(t, lingering, cfg)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				tc := c.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				handle(tc)
				tc.Close()
			}()
		}
	}()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// rejecting is a handler for a server whose handshake fails (the client's
// certificate is not trusted): it closes at once, as net/http does.
func rejecting(tc *tls.Conn) {
	if err := tc.Handshake(); err == nil {
		io.Copy(io.Discard, tc)
	}
}

// dialTLS dials s with cfg, without a handshake.
func dialTLS(t testing.TB, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Client(raw, cfg)
}

// faultConn lets a test decide what the next Write on a real connection
// returns.
type faultConn struct {
	net.Conn
	mu       sync.Mutex
	writeErr error
}

func (f *faultConn) Write(b []byte) (int, error) {
	f.mu.Lock()
	err := f.writeErr
	f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return f.Conn.Write(b)
}

func (f *faultConn) failWrites(err error) {
	f.mu.Lock()
	f.writeErr = err
	f.mu.Unlock()
}
