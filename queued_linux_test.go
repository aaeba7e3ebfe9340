//go:build linux

package linger

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// queueResponse writes n bytes to srv, to a peer that reads nothing yet and
// whose receive buffer is rcvBuf, so that they stay queued in srv's kernel
// send queue.
func queueResponse(t *testing.T, srv, cli *net.TCPConn, n, rcvBuf int) {
	t.Helper()
	cli.SetReadBuffer(rcvBuf)
	srv.SetWriteBuffer(2 * n)
	srv.SetWriteDeadline(time.Now().Add(time.Second))
	if k, err := srv.Write(make([]byte, n)); k != n {
		t.Fatalf("queued %d of %d bytes: %v", k, n, err)
	}
}

// readAll reads c until EOF or an error, and returns the bytes and the
// error (nil at EOF).
func readAll(c net.Conn, within time.Duration) (int64, error) {
	c.SetReadDeadline(time.Now().Add(within))
	n, err := io.Copy(io.Discard, c)
	return n, err
}

// TestMaxQueued: peers that never read keep our bytes queued. A hand-off
// that would take the total over MaxQueued while every holder has lingered
// less than IdleTimeout (none has had the time to show it is stalled) is
// closed plainly (ErrMaxQueued), and its peer still gets every byte, as
// after a plain close. Once the holders have lingered IdleTimeout without
// acknowledging anything, the next hand-off releases the longest-lingering
// of them with ErrMaxQueued and aborts it, so its send queue is freed at
// once (its peer sees a reset). The bound holds at every hand-off.
func TestMaxQueued(t *testing.T) {
	const each, bound, conns, idle = 128 << 10, 250 << 10, 4, 300 * time.Millisecond
	h := newHarness(t, Config{MaxQueued: bound, IdleTimeout: idle}, false)
	ln := listen(t)
	var clients []*net.TCPConn
	var first int64 // what the first hand-off queued: the peer took the rest
	handOff := func() {
		t.Helper()
		srv, cli := pair(t, ln, nil)
		queueResponse(t, srv, cli, each, 4<<10)
		clients = append(clients, cli)
		h.Close(srv)
		h.mu.Lock()
		q := h.qbytes
		h.mu.Unlock()
		if first == 0 {
			first = q
		}
		if q > bound {
			t.Errorf("hand-off %d: %d bytes queued, bound %d", len(clients), q, bound)
		}
	}
	for range conns {
		handOff()
	}
	fit := int(bound / first)
	t.Logf("%d bytes queued on each, %d fit under %d", first, fit, bound)
	if fit < 1 || fit >= conns {
		t.Fatalf("premise: %d bytes queued on the first connection, so %d fit under %d: want between 1 and %d", first, fit, bound, conns-1)
	}
	for range conns - fit {
		r := h.next(t, time.Second)
		if r.Outcome != Plain || !errors.Is(r.Err, ErrMaxQueued) {
			t.Errorf("report %v %v, want %v with ErrMaxQueued", r.Outcome, r.Err, Plain)
		}
	}
	// Closed plainly: the kernel sends the rest, as for any close. At the
	// pace of its zero-window probes (the window of 4 KiB is below one
	// loopback segment), so the peers read while the test goes on.
	refused := make(chan error, conns)
	for _, c := range clients[fit:] {
		go func() {
			c.SetReadBuffer(1 << 20)
			n, err := readAll(c, 10*time.Second)
			if err == nil && n != each {
				err = fmt.Errorf("%d bytes, then EOF", n)
			}
			refused <- err
		}()
	}
	defer func() {
		for range conns - fit {
			if err := <-refused; err != nil {
				t.Errorf("peer of a refused hand-off: %v; want all %d bytes and EOF", err, each)
			}
		}
	}()
	if st := h.Stats(); st.Lingering != fit {
		t.Errorf("%d lingering, want %d", st.Lingering, fit)
	}

	// Stalled for IdleTimeout: the next hand-off releases the oldest.
	time.Sleep(idle + idle/2)
	handOff()
	r := h.next(t, time.Second)
	if r.Outcome != Released || !errors.Is(r.Err, ErrMaxQueued) {
		t.Fatalf("report %v %v, want %v with ErrMaxQueued", r.Outcome, r.Err, Released)
	}
	if r.Unacked < first/2 {
		t.Errorf("released with %d bytes unacknowledged, want about %d", r.Unacked, first)
	}
	// The pressure is the stalled peer's own: another address keeps its
	// budget.
	h.mu.Lock()
	own := h.budgetFor(h.peerKey(netip.MustParseAddrPort("127.0.0.1:1")))
	other := h.budgetFor(h.peerKey(netip.MustParseAddrPort("127.0.0.9:1")))
	h.mu.Unlock()
	if own != h.cfg.PressureDiscard || other != h.cfg.MaxDiscard {
		t.Errorf("budgets after the release: the stalled peer's %d, another's %d; want %d and %d", own, other, h.cfg.PressureDiscard, h.cfg.MaxDiscard)
	}
	// The released one was reset: its peer reads what arrived, then
	// ECONNRESET.
	if _, err := readAll(clients[0], 5*time.Second); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer of a released connection read until %v, want a reset", err)
	}
}

// TestMaxQueuedSparesProgress is the attack: a slow reader of a large
// response (127.0.0.3) lingers while an attacker (127.0.0.2) keeps handing
// off connections that never read, each with a response queued, far past
// MaxQueued. The slow reader keeps acknowledging, so it is never the one
// released: it gets its whole response and our FIN, as a plain close would
// have given it. Releasing the longest-lingering holder, as MaxQueued did
// before, reset it within the first overflow.
func TestMaxQueuedSparesProgress(t *testing.T) {
	const (
		response = 1 << 20
		attack   = 256 << 10
		bound    = 1536 << 10
		idle     = 200 * time.Millisecond
	)
	h := newHarness(t, Config{MaxQueued: bound, IdleTimeout: idle}, false)
	ln := listen(t)
	srv, reader := pair(t, ln, net.IPv4(127, 0, 0, 3))
	// A window of more than one loopback segment (64 KiB): with less, the
	// sender waits for the window to open by its persist timer, and the
	// reader crawls whoever closes it.
	queueResponse(t, srv, reader, response, 128<<10)
	h.Close(srv)

	// The same response to the same reader, closed plainly, beside it:
	// what linger must not do worse than.
	psrv, plain := pair(t, ln, net.IPv4(127, 0, 0, 4))
	queueResponse(t, psrv, plain, response, 128<<10)
	psrv.Close()
	got, plainGot := slowRead(reader), slowRead(plain)
	var released, refused int
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		s, c := pair(t, ln, net.IPv4(127, 0, 0, 2))
		queueResponse(t, s, c, attack, 4<<10)
		h.Close(s)
		time.Sleep(30 * time.Millisecond)
	}
	r, p := <-got, <-plainGot
	if r.err != nil || r.n != response {
		t.Errorf("the slow reader got %d of %d bytes, then %v", r.n, response, r.err)
	}
	t.Logf("the slow reader got %d of %d bytes with linger, %d (then %v) after a plain close", r.n, response, p.n, p.err)
	if r.n < p.n {
		t.Errorf("linger left the slow reader worse off than a plain close: %d bytes against %d", r.n, p.n)
	}
	// Every report so far is the attacker's, but for the reader's own end
	// once it has read everything (idle: it does not close), which a slow
	// run reaches before this.
	for len(h.reports) > 0 {
		r := <-h.reports
		if a := r.RemoteAddr.String(); a[:10] != "127.0.0.2:" {
			if r.Outcome != Idle {
				t.Errorf("report %v %v for %s, want only the attacker's, or the reader's idle end", r.Outcome, r.Err, a)
			}
			continue
		}
		switch {
		case r.Outcome == Released && errors.Is(r.Err, ErrMaxQueued):
			released++
		case r.Outcome == Plain && errors.Is(r.Err, ErrMaxQueued):
			refused++
		}
	}
	t.Logf("attacker connections: %d released (reset), %d closed plainly at hand-off", released, refused)
	if released == 0 {
		t.Errorf("no attacker connection released: the attack did not reach MaxQueued")
	}
}

// readResult is what slowRead read.
type readResult struct {
	n   int64
	err error // nil at EOF
}

// slowRead reads c at about 640 KB/s, 32 KiB every 50 ms, until EOF or an
// error, in the background.
func slowRead(c net.Conn) <-chan readResult {
	got := make(chan readResult, 1)
	go func() {
		var r readResult
		buf := make([]byte, 32<<10)
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			k, err := io.ReadFull(c, buf)
			r.n += int64(k)
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF {
					r.err = err
				}
				got <- r
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return got
}
