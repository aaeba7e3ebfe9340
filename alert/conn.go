package alert

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultProbeTimeout bounds the read with which a Conn looks for the peer's
// alert after a failed Write. On Linux an alert that arrived before the
// reset is already in the socket, so the read returns at once; the bound only
// matters for a peer that reset without sending one.
const DefaultProbeTimeout = 50 * time.Millisecond

// maxPending caps the application data a probe reads past, and keeps for
// later Reads, while it looks for an alert.
const maxPending = 64 << 10

var errNilConn = errors.New("alert: nil *Conn")

// An Option configures a Conn.
type Option func(*Conn)

// WithProbeTimeout bounds the read with which a Conn looks for the peer's
// alert after a failed Write, and the wait for a concurrent Read that may be
// about to deliver it. Zero means DefaultProbeTimeout; a negative value turns
// the probe off, leaving only alerts that Read has already seen.
func WithProbeTimeout(d time.Duration) Option {
	return func(c *Conn) {
		switch {
		case d == 0:
			c.probeTimeout = DefaultProbeTimeout
		case d < 0:
			c.probeTimeout = 0
		default:
			c.probeTimeout = d
		}
	}
}

// Conn is a *tls.Conn whose errors report the fatal alert the peer sent
// before the connection failed. It implements net.Conn and is safe for the
// same concurrent use as a *tls.Conn: one Read and one Write at a time, in
// different goroutines.
//
// Errors are mapped as follows; every other error, and every success, is
// passed through unchanged.
//
//   - An alert returned by Read, Write or a handshake becomes an [*Error]
//     whose Err is crypto/tls's error. The Conn remembers the first one.
//   - When Write fails with ECONNRESET, EPIPE, ECONNABORTED (on Windows,
//     Winsock's WSAECONNRESET and WSAECONNABORTED), net.ErrClosed or
//     io.ErrUnexpectedEOF, the Conn looks for the alert: one already seen;
//     else one a concurrent Read is about to return (it waits for that Read
//     up to the probe timeout); else, unless the connection was closed, it
//     reads the socket itself until the alert, an error or the probe
//     timeout. Application data read on the way is kept and returned by
//     later Reads. If an alert turns up, Write returns an [*Error] whose Err
//     is the write's error; if none does, the write's error is returned as
//     it was, and no alert is invented.
//   - When Read fails in those ways after an alert was seen, it returns an
//     [*Error] whose Err is the read's error.
//
// Linux keeps data that arrived before a reset readable, so there the
// probe finds an alert the application never read. Windows discards
// received but unread data when the reset arrives: there a Conn reports
// only an alert that a Read had already taken from the socket, as an HTTP
// client's read loop, always reading, often has.
//
// A probe sets its own read deadline and then restores the last one set
// through the Conn; Reads wait for it to finish. This only ever happens once
// a write has failed.
type Conn struct {
	tc           *tls.Conn
	probeTimeout time.Duration

	// rsem serializes reading from tc between Read and a probe, with a
	// bounded wait for the probe. It also guards pending.
	rsem    chan struct{}
	pending []byte // read by a probe, not yet returned by Read

	alert atomic.Pointer[Error] // the first alert seen

	// cs caches the connection state for Response.TLS, which stays the
	// same once the handshake is done; one copy serves every response.
	cs atomic.Pointer[tls.ConnectionState]

	dmu          sync.Mutex
	readDeadline time.Time // the last read deadline set through the Conn
}

// Wrap returns a Conn that reads and writes through tc. tc must not be used
// directly afterwards. Wrap returns nil if tc is nil.
func Wrap(tc *tls.Conn, opts ...Option) *Conn {
	if tc == nil {
		return nil
	}
	c := &Conn{tc: tc, probeTimeout: DefaultProbeTimeout, rsem: make(chan struct{}, 1)}
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
	return c
}

// Read reads data from the connection; see Conn for its errors.
func (c *Conn) Read(b []byte) (int, error) {
	if c == nil || c.tc == nil {
		return 0, errNilConn
	}
	c.rsem <- struct{}{}
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		if c.pending = c.pending[n:]; len(c.pending) == 0 {
			c.pending = nil
		}
		<-c.rsem
		return n, nil
	}
	n, err := c.tc.Read(b)
	if err != nil {
		err = c.mapErr(err)
	}
	<-c.rsem
	return n, err
}

// Write writes data to the connection; see Conn for its errors.
func (c *Conn) Write(b []byte) (int, error) {
	if c == nil || c.tc == nil {
		return 0, errNilConn
	}
	n, err := c.tc.Write(b)
	if err != nil {
		if c.alert.Load() == nil && isTransport(err) {
			c.probe(err)
		}
		err = c.mapErr(err)
	}
	return n, err
}

// Handshake runs the client or server handshake protocol if it has not yet
// been run, like tls.Conn.Handshake. An alert received during the handshake
// is returned as an [*Error].
func (c *Conn) Handshake() error {
	return c.HandshakeContext(context.Background())
}

// HandshakeContext is Handshake with a context, like
// tls.Conn.HandshakeContext.
func (c *Conn) HandshakeContext(ctx context.Context) error {
	if c == nil || c.tc == nil {
		return errNilConn
	}
	if err := c.tc.HandshakeContext(ctx); err != nil {
		return c.mapErr(err)
	}
	return nil
}

// Close closes the connection, like tls.Conn.Close.
func (c *Conn) Close() error {
	if c == nil || c.tc == nil {
		return errNilConn
	}
	return c.tc.Close()
}

// CloseWrite shuts down the writing side of the connection, like
// tls.Conn.CloseWrite.
func (c *Conn) CloseWrite() error {
	if c == nil || c.tc == nil {
		return errNilConn
	}
	return c.tc.CloseWrite()
}

// ConnectionState returns basic TLS details about the connection.
func (c *Conn) ConnectionState() tls.ConnectionState {
	if c == nil || c.tc == nil {
		return tls.ConnectionState{}
	}
	return c.tc.ConnectionState()
}

// state returns the connection state, computed once after the handshake.
func (c *Conn) state() *tls.ConnectionState {
	if cs := c.cs.Load(); cs != nil {
		return cs
	}
	cs := c.tc.ConnectionState()
	if !cs.HandshakeComplete {
		return nil
	}
	c.cs.CompareAndSwap(nil, &cs)
	return c.cs.Load()
}

// NetConn returns the connection under TLS, like tls.Conn.NetConn.
func (c *Conn) NetConn() net.Conn {
	if c == nil || c.tc == nil {
		return nil
	}
	return c.tc.NetConn()
}

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr {
	if c == nil || c.tc == nil {
		return nil
	}
	return c.tc.LocalAddr()
}

// RemoteAddr returns the remote network address.
func (c *Conn) RemoteAddr() net.Addr {
	if c == nil || c.tc == nil {
		return nil
	}
	return c.tc.RemoteAddr()
}

// SetDeadline sets the read and write deadlines, like tls.Conn.SetDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if c == nil || c.tc == nil {
		return errNilConn
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.readDeadline = t
	return c.tc.SetDeadline(t)
}

// SetReadDeadline sets the read deadline, like tls.Conn.SetReadDeadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c == nil || c.tc == nil {
		return errNilConn
	}
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.readDeadline = t
	return c.tc.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline, like tls.Conn.SetWriteDeadline.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c == nil || c.tc == nil {
		return errNilConn
	}
	return c.tc.SetWriteDeadline(t)
}

// mapErr returns err as an *Error if it is an alert, or a transport error
// that followed one; it records the first alert seen.
func (c *Conn) mapErr(err error) error {
	if code, ok := remoteAlert(err); ok {
		ae := newError(code, err)
		c.alert.CompareAndSwap(nil, ae)
		return ae
	}
	if isTransport(err) {
		if a := c.alert.Load(); a != nil {
			return &Error{Code: a.Code, Description: a.Description, Err: err}
		}
	}
	return err
}

// probe looks for the peer's alert after Write failed with werr, recording
// it if found.
func (c *Conn) probe(werr error) {
	if c.probeTimeout <= 0 {
		return
	}
	deadline := time.Now().Add(c.probeTimeout)
	select {
	case c.rsem <- struct{}{}:
	default:
		// A Read is in progress; it returns the alert, if one came, as
		// soon as it reads it.
		t := time.NewTimer(c.probeTimeout)
		select {
		case c.rsem <- struct{}{}:
			t.Stop()
		case <-t.C:
			return
		}
	}
	defer func() { <-c.rsem }()
	if c.alert.Load() != nil || errors.Is(werr, net.ErrClosed) {
		return
	}
	if c.tc.SetReadDeadline(deadline) != nil {
		return
	}
	defer func() {
		c.dmu.Lock()
		c.tc.SetReadDeadline(c.readDeadline)
		c.dmu.Unlock()
	}()
	var buf [4 << 10]byte
	for len(c.pending) < maxPending {
		n, err := c.tc.Read(buf[:])
		c.pending = append(c.pending, buf[:n]...)
		if err != nil {
			c.mapErr(err)
			return
		}
	}
}

// isTransport reports whether err says the connection was reset, aborted or
// closed: what a peer's fatal alert is usually followed by.
func isTransport(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		(runtime.GOOS == "windows" && isWinsockReset(err))
}

// Winsock's codes for a connection reset or aborted. On Windows the net
// package returns these as syscall.Errno, and errors.Is does not match
// them to syscall.ECONNRESET or syscall.ECONNABORTED, which are values
// Go invents there.
const (
	wsaECONNABORTED syscall.Errno = 10053
	wsaECONNRESET   syscall.Errno = 10054
)

// isWinsockReset reports whether err carries Winsock's reset or abort
// code. It is compiled everywhere so that it can be tested everywhere.
func isWinsockReset(err error) bool {
	var en syscall.Errno
	return errors.As(err, &en) && (en == wsaECONNRESET || en == wsaECONNABORTED)
}
