package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/pki"
)

// server is one cell's TLS server: it plays the scenario's server side on
// every connection and closes it with the cell's strategy.
type server struct {
	ln       net.Listener
	lc       *linger.Closer
	hs       *http.Server // the rejection scenarios' server
	log      *closeLog
	accepted atomic.Int64 // connections accepted
	released atomic.Int64 // connections their owner has closed
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

// serverDeadline bounds one server connection's work, so that a client that
// vanishes cannot hold a handler.
const serverDeadline = 2 * time.Minute

func startServer(ctx context.Context, nw *network, sc Scenario, strategy string, ca *pki.PKI) (*server, error) {
	raw, err := nw.listen()
	if err != nil {
		return nil, err
	}
	s := &server{log: newCloseLog()}
	ctx, s.cancel = context.WithCancel(ctx)
	if strategy == "linger" {
		// The engine with its default bounds: what a user gets from the
		// README's two lines.
		s.lc, err = linger.New(linger.Config{OnClose: func(r linger.Report) {
			s.log.add(closeRecord{held: r.Held, discarded: r.Discarded, outcome: r.Outcome.String()})
		}})
		if err != nil {
			raw.Close()
			return nil, err
		}
	}
	s.ln = &countingListener{strategyListener(ctx, raw, strategy, s.lc, s.log), s}

	cfg := ca.ServerConfig(sc.tlsVersion)
	if sc.rejects {
		// Go's own HTTPS server: net/http closes
		// the connection at once after a failed handshake, through the
		// listener's conn, so the strategy decides how. It offers h2,
		// which matters: curl negotiates HTTP/2 and then fails in
		// getpeername() instead of reading the alert.
		s.hs = &http.Server{
			Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }),
			TLSConfig: cfg,
			ErrorLog:  log.New(io.Discard, "", 0), // a handshake error per trial
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.hs.ServeTLS(s.ln, "", "")
		}()
		return s, nil
	}
	// The other scenarios need a server that does exactly one thing and
	// then closes, which net/http does not (it has its own rstAvoidanceDelay
	// after a response with an unread body), so they get their own loop.
	cfg.ClientAuth = tls.NoClientCert
	cfg.ClientCAs = nil
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				c.SetDeadline(time.Now().Add(serverDeadline))
				tc := tls.Server(c, cfg)
				serveConn(ctx, tc, sc)
				// Like net/http: tls.Conn.Close sends close_notify after a
				// completed handshake, then closes the TCP connection
				// under it, which is where the strategies differ.
				tc.Close()
			}()
		}
	}()
	return s, nil
}

// countingListener counts the connections accepted and those their owner
// closed, so that stop knows when the server code is done with all of them.
type countingListener struct {
	net.Listener
	s *server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.accepted.Add(1)
	return &ownedConn{Conn: c, s: l.s}, nil
}

type ownedConn struct {
	net.Conn
	s    *server
	once sync.Once
}

func (c *ownedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.s.released.Add(1) })
	return err
}

// serveConn plays the server's side of sc on tc, up to the close.
func serveConn(ctx context.Context, tc *tls.Conn, sc Scenario) {
	if err := tc.HandshakeContext(ctx); err != nil {
		// The expected end of the rejection scenarios: crypto/tls has
		// sent its alert.
		return
	}
	switch sc.ID {
	case "midstream":
		// Queue 4 MiB while never reading the client's upload; Write
		// returns once all of it is in the kernel's send queue or on its
		// way.
		tc.Write(make([]byte, midstreamBytes))
	case "http413":
		// Read the request head only, answer at once, leave the body
		// unread: what a server does when it refuses a large upload.
		br := bufio.NewReader(tc)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil || len(bytes.TrimSpace(line)) == 0 {
				break
			}
		}
		io.WriteString(tc, "HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain\r\n"+
			"Content-Length: 19\r\nConnection: close\r\n\r\nrequest too large.\n")
	default:
		// A rejection scenario whose client was accepted: not what the lab
		// sets up, but drain and answer rather than hang.
		io.Copy(io.Discard, io.LimitReader(tc, 64<<20))
	}
}

// stop closes the listener and waits until every connection the server
// accepted has been closed and its socket released: by the strategy, or by
// the linger engine within its bounds. It returns the close records.
func (s *server) stop(ctx context.Context) ([]closeRecord, error) {
	s.ln.Close()
	defer s.cancel()
	// The server code closes each connection once it is done with it
	// (the sleep strategy inside that Close); the clients are all done.
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for s.released.Load() < s.accepted.Load() {
		select {
		case <-s.log.changed:
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("lab: server still holds %d of %d connections",
				s.accepted.Load()-s.released.Load(), s.accepted.Load())
		}
	}
	if s.hs != nil {
		s.hs.Close()
	}
	s.wg.Wait()
	var err error
	if s.lc != nil {
		// Lingering connections end by themselves within the engine's
		// bounds (30 s at most); ctx only cuts this short on Ctrl-C.
		err = s.lc.Shutdown(ctx)
	}
	// Records arrive synchronously from Close or OnClose, so by now
	// every accepted connection has one; this is only a safety net.
	for int64(len(s.log.snapshot())) < s.accepted.Load() {
		select {
		case <-s.log.changed:
		case <-deadline.C:
			return s.log.snapshot(), errors.Join(err, fmt.Errorf("lab: %d connections accepted, %d close records",
				s.accepted.Load(), len(s.log.snapshot())))
		}
	}
	return s.log.snapshot(), err
}

func (s *server) addr() string { return s.ln.Addr().String() }
