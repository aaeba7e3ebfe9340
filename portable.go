package linger

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// portable is the backend for systems without the event loop: a goroutine
// per lingering connection, blocked in Read on the runtime's poller. It sees
// incoming bytes but not acknowledgements, so only incoming bytes count as
// progress against IdleTimeout.
type portable struct {
	c *Closer
	// conns holds each lingering entry's connection, for stop to wake its
	// goroutine; guarded by Closer.mu. The entry itself stays the event
	// loop's size.
	conns map[*entry]net.Conn
}

func newPortable(c *Closer) portable { return portable{c: c, conns: make(map[*entry]net.Conn)} }

func (p portable) handOff(tcp *net.TCPConn, addr netip.AddrPort, budget int64) error {
	conn, err := detachConn(tcp)
	if err != nil {
		return err
	}
	c := p.c
	clamp := c.clampFor(budget)
	if clamp > 0 {
		setReadBuffer(conn, clamp)
	}
	e := &entry{fd: -1, heapIdx: -1}
	if clamp > 0 {
		e.flags |= clamped
	}
	c.mu.Lock()
	defer c.unlock()
	if err := c.admit(e, addr, 0); err != nil {
		conn.Close()
		c.plainRefused(addr, err)
		return nil
	}
	p.conns[e] = conn
	e.lastActive = e.start
	c.wg.Add(1)
	go p.drain(e, conn)
	return nil
}

// stop releases e at once; its goroutine wakes from the deadline in the past
// and closes the socket.
func (p portable) stop(e *entry, o Outcome, err error) {
	conn := p.conns[e]
	p.release(e, o, err)
	if tcp, ok := conn.(*net.TCPConn); ok && errors.Is(err, ErrMaxQueued) {
		tcp.SetLinger(0) // close sends RST and frees the send queue at once
	}
	conn.SetReadDeadline(time.Unix(1, 0))
}

// release is Closer.release for an entry of this backend; c.mu must be
// held.
func (p portable) release(e *entry, o Outcome, err error) {
	delete(p.conns, e)
	p.c.release(e, o, -1, err)
}

// setReadBuffer clamps conn's receive buffer (SO_RCVBUF) under pressure;
// see clampRcvBuf for what Linux does with it. What other systems do with
// a buffer shrunk on an established connection varies; the byte budget
// bounds what the connection costs either way, so an error changes
// nothing.
func setReadBuffer(conn net.Conn, n int) {
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetReadBuffer(n)
	}
}

// shutdown has nothing to do: each goroutine ends with its connection.
func (p portable) shutdown() {}

// stalled is never asked: this backend does not measure send queues, so
// none of its entries holds queued bytes.
func (p portable) stalled(*entry) bool { return true }

// smallBuf is what a lingering connection waits with: most peers send
// nothing more, or a little. A peer that fills it gets a pooled large buffer
// for as long as it keeps filling it.
const smallBuf = 512

var bigBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// drain is the goroutine of one lingering connection: it owns conn and
// closes it when e is released, by itself or by stop.
func (p portable) drain(e *entry, conn net.Conn) {
	c := p.c
	defer c.wg.Done()
	defer conn.Close()
	var small [smallBuf]byte
	var big *[32 << 10]byte
	defer func() {
		if big != nil {
			bigBufs.Put(big)
		}
	}()
	buf := small[:]
	clamp := 0
	c.mu.Lock()
	for !e.released {
		idle := e.lastActive + int64(c.cfg.IdleTimeout)
		conn.SetReadDeadline(c.epoch.Add(time.Duration(min(idle, c.hard(e)))))
		c.mu.Unlock()
		if clamp > 0 {
			setReadBuffer(conn, clamp)
			clamp = 0
		}

		n, err := conn.Read(buf)
		if n == len(buf) && big == nil {
			big = bigBufs.Get().(*[32 << 10]byte)
			buf = big[:]
		} else if n < len(buf) && big != nil {
			bigBufs.Put(big)
			big, buf = nil, small[:]
		}

		c.mu.Lock()
		if e.released { // stopped while we read
			break
		}
		now := c.now()
		if n > 0 {
			e.discarded += int64(n)
			e.lastActive = now
			budget := c.budgetFor(c.peerKey(e.addr))
			if e.discarded > budget {
				p.release(e, Budget, nil)
				break
			}
			if e.flags&clamped == 0 {
				// Pressure began after its hand-off: clamp it now.
				if clamp = c.clampFor(budget); clamp > 0 {
					e.flags |= clamped
				}
			}
		}
		switch {
		case err == nil:
		case err == io.EOF:
			p.release(e, PeerClosed, nil)
		case errors.Is(err, os.ErrDeadlineExceeded):
			if now >= c.hard(e) {
				p.release(e, HardCap, nil)
			} else if now >= e.lastActive+int64(c.cfg.IdleTimeout) {
				p.release(e, Idle, nil)
			}
		case errors.Is(err, syscall.ECONNRESET):
			p.release(e, PeerReset, nil)
		default:
			p.release(e, PeerReset, err)
		}
	}
	c.unlock()
}
