package linger

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// portable is the backend for systems without the event loop: a goroutine
// per lingering connection, blocked in Read on the runtime's poller. It sees
// incoming bytes but not acknowledgements, so only incoming bytes count as
// progress against IdleTimeout.
type portable struct{ c *Closer }

func (p portable) detach(tcp *net.TCPConn) (handle, error) {
	conn, err := detachConn(tcp)
	return handle{fd: -1, conn: conn}, err
}

func (p portable) newEntry(h handle) *entry { return &entry{conn: h.conn, fd: -1} }

func (p portable) closeNow(h handle) { h.conn.Close() }

func (p portable) start(e *entry) {
	c := p.c
	e.hard = e.start + int64(c.cfg.MaxHold)
	e.lastActive = e.start
	c.wg.Add(1)
	go p.drain(e)
}

// stop releases e at once; its goroutine wakes from the deadline in the past
// and closes the socket.
func (p portable) stop(e *entry, o Outcome, err error) {
	p.c.release(e, o, -1, err)
	if tcp, ok := e.conn.(*net.TCPConn); ok && errors.Is(err, ErrMaxQueued) {
		tcp.SetLinger(0) // close sends RST and frees the send queue at once
	}
	e.conn.SetReadDeadline(time.Unix(1, 0))
}

// smallBuf is what a lingering connection waits with: most peers send
// nothing more, or a little. A peer that fills it gets a pooled large buffer
// for as long as it keeps filling it.
const smallBuf = 512

var bigBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (p portable) drain(e *entry) {
	c := p.c
	defer c.wg.Done()
	defer e.conn.Close()
	var small [smallBuf]byte
	var big *[32 << 10]byte
	defer func() {
		if big != nil {
			bigBufs.Put(big)
		}
	}()
	buf := small[:]
	c.mu.Lock()
	for !e.released {
		idle := e.lastActive + int64(c.cfg.IdleTimeout)
		e.conn.SetReadDeadline(c.epoch.Add(time.Duration(min(idle, e.hard))))
		c.mu.Unlock()

		n, err := e.conn.Read(buf)
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
			if e.discarded > c.cfg.MaxDiscard {
				c.release(e, Budget, -1, nil)
				break
			}
		}
		switch {
		case err == nil:
		case err == io.EOF:
			c.release(e, PeerClosed, -1, nil)
		case errors.Is(err, os.ErrDeadlineExceeded):
			if now >= e.hard {
				c.release(e, HardCap, -1, nil)
			} else if now >= e.lastActive+int64(c.cfg.IdleTimeout) {
				c.release(e, Idle, -1, nil)
			}
		case errors.Is(err, syscall.ECONNRESET):
			c.release(e, PeerReset, -1, nil)
		default:
			c.release(e, PeerReset, -1, err)
		}
	}
	c.unlock()
}
