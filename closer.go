package linger

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// A Closer closes connections with a lingering close. Its methods are safe
// for concurrent use. A Closer holds no goroutine and no descriptor while
// nothing lingers.
type Closer struct {
	cfg   Config
	epoch time.Time // monotonic origin of the engine's int64 clocks
	be    backend
	wg    sync.WaitGroup // the backend's goroutines

	mu             sync.Mutex
	down           bool          // Shutdown was called
	drained        chan struct{} // closed when n drops to 0 after Shutdown
	n              int           // entries admitted and not yet released
	oldest, newest *entry        // age list
	peers          map[netip.Addr]*peer
	stats          counters
	reports        []Report // waiting for OnClose, delivered by unlock
}

// peer lists one IP address's lingering connections, oldest first.
type peer struct {
	oldest, newest *entry
	n              int
}

// New returns a Closer with the bounds in cfg, or an error wrapping
// ErrConfig if cfg is invalid.
func New(cfg Config) (*Closer, error) {
	// LINGER_BACKEND=portable selects the portable backend on Linux too, so
	// that benchmarks and tests can compare the two.
	return newCloser(cfg, os.Getenv("LINGER_BACKEND") == "portable")
}

func newCloser(cfg Config, portableOnly bool) (*Closer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Closer{cfg: cfg, epoch: time.Now()}
	if cfg.MaxConnsPerIP > 0 {
		c.peers = make(map[netip.Addr]*peer)
	}
	c.be = newBackend(c, portableOnly)
	return c, nil
}

// Must is like New but panics on an invalid Config. It is meant for
// package-level variables and configs written as literals.
func Must(cfg Config) *Closer {
	c, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return c
}

// now returns the engine's clock.
func (c *Closer) now() int64 { return int64(time.Since(c.epoch)) }

// Close takes conn from its caller and returns at once. Bytes already written
// to conn still go out, followed by a FIN; anything blocked in conn's Read or
// Write returns net.ErrClosed; in the background, what the peer still sends
// is read and discarded until it closes, within the Config's bounds.
//
// conn may be a *net.TCPConn, a connection accepted through Listener, a
// *tls.Conn on either, or any connection with a NetConn method that leads to
// one. A *tls.Conn is closed without close_notify: to send one, close the
// *tls.Conn itself on a connection accepted through Listener. Anything else is
// closed plainly and counted.
//
// Close returns the error of closing conn itself, such as net.ErrClosed for a
// connection closed before; it never fails because lingering was not
// possible.
//
// On Windows, where a socket cannot be duplicated within a process, conn
// itself lingers: its write side is shut down at once, but a goroutine
// blocked in its Read returns only when lingering ends.
func (c *Closer) Close(conn net.Conn) error {
	tcp := tcpConn(conn)
	if tcp == nil {
		err := conn.Close()
		c.plain(conn, ErrNotTCP)
		return err
	}
	c.mu.Lock()
	down := c.down
	c.mu.Unlock()
	if down {
		err := tcp.Close()
		if err == nil {
			c.plain(conn, ErrShutdown)
		}
		return err
	}
	var addr netip.AddrPort
	if a, ok := tcp.RemoteAddr().(*net.TCPAddr); ok {
		addr = a.AddrPort()
		addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	}
	h, err := c.be.detach(tcp)
	switch err {
	case nil:
	case errTaken:
		// Someone else closed conn first; the socket is theirs.
		return tcp.Close()
	default:
		cerr := tcp.Close()
		if cerr == nil {
			c.plain(conn, err)
		}
		return cerr
	}
	c.admit(h, addr)
	return nil
}

// plain counts a connection closed without lingering.
func (c *Closer) plain(conn net.Conn, why error) {
	r := Report{Outcome: Plain, Unacked: -1, Err: why}
	if c.cfg.OnClose != nil {
		r.RemoteAddr = remoteAddr(conn)
	}
	c.mu.Lock()
	c.report(r)
	c.unlock()
}

func remoteAddr(conn net.Conn) (a net.Addr) {
	defer func() {
		// A connection that was never connected may panic here; the address
		// is only evidence.
		if recover() != nil {
			a = nil
		}
	}()
	return conn.RemoteAddr()
}

// admit starts lingering on a detached socket, making room under the caps.
func (c *Closer) admit(h handle, addr netip.AddrPort) {
	c.mu.Lock()
	defer c.unlock()
	if c.down {
		c.be.closeNow(h)
		c.report(Report{RemoteAddr: tcpAddr(addr), Outcome: Plain, Unacked: -1, Err: ErrShutdown})
		return
	}
	var p *peer
	if c.peers != nil {
		p = c.peers[addr.Addr()]
		if p == nil {
			p = new(peer)
			c.peers[addr.Addr()] = p
		}
		if p.n >= c.cfg.MaxConnsPerIP {
			c.be.stop(p.oldest, Released)
		}
	}
	if c.n >= c.cfg.MaxConns {
		c.be.stop(c.oldest, Released)
	}
	e := c.be.newEntry(h)
	e.addr = addr
	e.start = c.now()
	e.prev = c.newest
	if c.newest != nil {
		c.newest.next = e
	} else {
		c.oldest = e
	}
	c.newest = e
	if p != nil {
		e.peerPrev = p.newest
		if p.newest != nil {
			p.newest.peerNext = e
		} else {
			p.oldest = e
		}
		p.newest = e
		p.n++
	}
	c.n++
	c.be.start(e)
}

// release unlinks e and records how it ended. Backends call it, with c.mu
// held, exactly once per entry.
func (c *Closer) release(e *entry, o Outcome, unacked int64, err error) {
	e.released = true
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.oldest = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.newest = e.prev
	}
	if c.peers != nil {
		p := c.peers[e.addr.Addr()]
		if e.peerPrev != nil {
			e.peerPrev.peerNext = e.peerNext
		} else {
			p.oldest = e.peerNext
		}
		if e.peerNext != nil {
			e.peerNext.peerPrev = e.peerPrev
		} else {
			p.newest = e.peerPrev
		}
		if p.n--; p.n == 0 {
			delete(c.peers, e.addr.Addr())
		}
	}
	e.prev, e.next, e.peerPrev, e.peerNext = nil, nil, nil, nil
	c.n--
	r := Report{
		Outcome:   o,
		Held:      time.Duration(c.now() - e.start),
		Discarded: e.discarded,
		Unacked:   unacked,
		Err:       err,
	}
	if c.cfg.OnClose != nil { // the address costs an allocation
		r.RemoteAddr = tcpAddr(e.addr)
	}
	c.report(r)
	if c.n == 0 && c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
}

func tcpAddr(a netip.AddrPort) net.Addr {
	if !a.IsValid() {
		return nil
	}
	return net.TCPAddrFromAddrPort(a)
}

// report counts r and queues it for OnClose; c.mu must be held.
func (c *Closer) report(r Report) {
	c.stats.add(&r)
	if c.cfg.OnClose != nil {
		c.reports = append(c.reports, r)
	}
}

// unlock releases c.mu and then delivers the reports queued under it, so
// OnClose never runs with the lock held.
func (c *Closer) unlock() {
	rs := c.reports
	c.reports = nil
	c.mu.Unlock()
	for _, r := range rs {
		c.cfg.OnClose(r)
	}
}

// Stats returns a snapshot of c's counters.
func (c *Closer) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats.snapshot(c.n)
}

// Shutdown makes c close later connections plainly and waits for the ones
// lingering to finish. If ctx ends first, Shutdown closes the rest at once
// and returns an error that wraps ctx.Err() and says how many it closed.
// Either way, when Shutdown returns, c holds no socket and no goroutine.
// Shutdown may be called more than once.
func (c *Closer) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	c.down = true
	var err error
	if c.n > 0 {
		if c.drained == nil {
			c.drained = make(chan struct{})
		}
		drained := c.drained
		c.mu.Unlock()
		select {
		case <-drained:
			c.mu.Lock()
		case <-ctx.Done():
			c.mu.Lock()
			if k := c.n; k > 0 {
				for c.oldest != nil {
					c.be.stop(c.oldest, Shutdown)
				}
				err = fmt.Errorf("linger: shutdown closed %d lingering connections early: %w", k, ctx.Err())
			}
		}
	}
	c.unlock()
	c.wg.Wait()
	return err
}
