//go:build linux

package linger

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestMaxQueued: peers that never read keep our bytes queued. Past
// MaxQueued, the longest-lingering connection holding queued bytes is
// released with ErrMaxQueued and aborted, so its send queue is freed at
// once (its peer sees a reset); the bound holds at every hand-off.
func TestMaxQueued(t *testing.T) {
	const each, bound, conns = 128 << 10, 250 << 10, 6
	h := newHarness(t, Config{MaxQueued: bound}, false)
	ln := listen(t)
	var clients []*net.TCPConn
	var first int64 // what the first hand-off queued: the peer took the rest
	for i := range conns {
		srv, cli := pair(t, ln, nil)
		cli.SetReadBuffer(4 << 10) // it never reads: our bytes stay queued
		srv.SetWriteBuffer(256 << 10)
		srv.SetWriteDeadline(time.Now().Add(time.Second))
		if n, err := srv.Write(make([]byte, each)); n != each {
			t.Fatalf("queued %d of %d bytes: %v", n, each, err)
		}
		clients = append(clients, cli)
		h.Close(srv)
		h.mu.Lock()
		q := h.qbytes
		h.mu.Unlock()
		if i == 0 {
			first = q
		}
		if q > bound {
			t.Errorf("hand-off %d: %d bytes queued, bound %d", i, q, bound)
		}
	}
	fit := int(bound / first)
	t.Logf("%d bytes queued on each, %d fit under %d", first, fit, bound)
	if fit < 1 || fit >= conns {
		t.Fatalf("premise: %d bytes queued on the first connection, so %d fit under %d: want between 1 and %d", first, fit, bound, conns-1)
	}
	released := 0
	for range conns - fit {
		r := h.next(t, time.Second)
		if r.Outcome != Released || !errors.Is(r.Err, ErrMaxQueued) {
			t.Errorf("report %v %v, want %v with ErrMaxQueued", r.Outcome, r.Err, Released)
			continue
		}
		if r.Unacked < first/2 {
			t.Errorf("released with %d bytes unacknowledged, want about %d", r.Unacked, first)
		}
		released++
	}
	if st := h.Stats(); st.Lingering != fit {
		t.Errorf("%d lingering, want %d", st.Lingering, fit)
	}
	// The released ones were reset: their peers read what arrived, then
	// ECONNRESET.
	for _, c := range clients[:released] {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64<<10)
		var err error
		for err == nil {
			_, err = c.Read(buf)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("peer of a released connection read until %v, want a reset", err)
		}
	}
}
