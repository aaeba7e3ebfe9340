package lab

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/linger-go/linger"
)

// rstAvoidanceDelay is net/http's: after some responses its server shuts
// down writing and sleeps this long, without reading, before closing.
const rstAvoidanceDelay = 500 * time.Millisecond

// closeRecord is the server's account of how one connection ended.
type closeRecord struct {
	held      time.Duration // from the owner's Close to the socket's release
	discarded int64         // bytes the server threw away: unread at close, or read and discarded
	outcome   string        // linger's Outcome, or the strategy's name
}

// closeLog collects a cell's closeRecords from the strategy's Close calls or
// from linger's OnClose.
type closeLog struct {
	mu      sync.Mutex
	records []closeRecord
	changed chan struct{} // signalled after each record
}

func newCloseLog() *closeLog { return &closeLog{changed: make(chan struct{}, 1)} }

func (l *closeLog) add(r closeRecord) {
	l.mu.Lock()
	l.records = append(l.records, r)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *closeLog) snapshot() []closeRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]closeRecord(nil), l.records...)
}

// strategyListener wraps ln so that the connections it accepts close with
// strategy; for "linger" it is lc's own Listener. The server code is the same
// for every strategy: it closes its *tls.Conn (or calls Close after a failed
// handshake, as net/http does), and the close of the TCP connection under it
// is what differs.
func strategyListener(ctx context.Context, ln net.Listener, strategy string, lc *linger.Closer, log *closeLog) net.Listener {
	if strategy == "linger" {
		return lc.Listener(ln)
	}
	return &stratListener{Listener: ln, ctx: ctx, strategy: strategy, log: log}
}

type stratListener struct {
	net.Listener
	ctx      context.Context
	strategy string
	log      *closeLog
}

func (l *stratListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &stratConn{TCPConn: c.(*net.TCPConn), l: l}, nil
}

// stratConn is a TCP connection whose Close follows one of the strategies
// other servers use.
type stratConn struct {
	*net.TCPConn
	l    *stratListener
	once sync.Once
}

func (c *stratConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		start := time.Now()
		switch c.l.strategy {
		case "rst":
			// SO_LINGER 0: close sends RST and discards both queues on
			// purpose; it is the opposite of a fix, shown for contrast.
			c.SetLinger(0)
		case "sleep":
			// net/http's closeWriteAndWait: FIN after what was written,
			// then wait without reading, then close.
			c.CloseWrite()
			t := time.NewTimer(rstAvoidanceDelay)
			select {
			case <-t.C:
			case <-c.l.ctx.Done():
				t.Stop()
			}
		}
		// What the kernel throws away with the close: the bytes received
		// and never read.
		unread := unreadBytes(c.TCPConn)
		err = c.TCPConn.Close()
		c.l.log.add(closeRecord{held: time.Since(start), discarded: unread, outcome: c.l.strategy})
	})
	return err
}
