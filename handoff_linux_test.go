//go:build linux

package linger

import (
	"container/heap"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The event loop's hand-off: the first drain runs in the caller's Close,
// and the epoll set and its goroutine outlive the last lingering socket by
// loopGrace. These are tests of the loop only.

// waitReadable waits up to 2 s until srv's socket has something to read
// (bytes, or the peer's FIN when rdhup is set), without reading it.
func waitReadable(t *testing.T, srv *net.TCPConn, rdhup bool) {
	t.Helper()
	rc, err := srv.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	ev := int16(unix.POLLIN)
	if rdhup {
		ev = unix.POLLRDHUP
	}
	var got int16
	rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: ev}}
		if n, _ := unix.Poll(pfd, 2000); n == 1 {
			got = pfd[0].Revents
		}
	})
	if got&ev == 0 {
		t.Fatalf("premise: the server's socket did not become readable (events %#x) within 2 s", ev)
	}
}

// epsOf returns the epoll set of each of c's shards, nil where there is
// none.
func epsOf(c *Closer) []*os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	var eps []*os.File
	for _, l := range c.be.(*loops).shards {
		eps = append(eps, l.ep)
	}
	return eps
}

// epOf returns one of c's epoll sets, or nil while there is none.
func epOf(c *Closer) *os.File {
	for _, ep := range epsOf(c) {
		if ep != nil {
			return ep
		}
	}
	return nil
}

// TestPeerGoneNeverTouchesLoop: a peer that sent a request and closed before
// the hand-off is done in Close itself: the report is delivered before
// Close returns, the request's bytes counted, and no epoll set or goroutine
// is ever made for it.
func TestPeerGoneNeverTouchesLoop(t *testing.T) {
	h := newHarness(t, Config{}, false)
	ln := listen(t)
	srv, cli := pair(t, ln, nil)
	if _, err := cli.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	waitReadable(t, srv, true)
	if err := h.Close(srv); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-h.reports:
		if r.Outcome != PeerClosed || r.Discarded != 100 || r.Held != 0 {
			t.Errorf("report %v, discarded %d, held %v; want peer_closed, 100, 0", r.Outcome, r.Discarded, r.Held)
		}
	default:
		t.Fatal("no report when Close returned: the hand-off did not drain inline")
	}
	if epOf(h.Closer) != nil {
		t.Errorf("the loop made an epoll set for a peer that had already closed")
	}
}

// TestPeerGoneNeedsNoDuplicate: a peer that closed or reset before the
// hand-off, leaving nothing unread once Close has drained it, gets a plain
// close of the caller's descriptor: no duplicate is made. With no
// descriptor to spare, a duplicate would fail with EMFILE and the report
// would say plain; it must say how the peer ended.
func TestPeerGoneNeedsNoDuplicate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		request int  // bytes the peer sends first
		reset   bool // the peer resets instead of closing
		want    Outcome
	}{
		{"closed", 0, false, PeerClosed},
		{"closed-after-request", 100, false, PeerClosed},
		{"reset", 0, true, PeerReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, false)
			srv, cli := pair(t, listen(t), nil)
			if tc.request > 0 {
				if _, err := cli.Write(make([]byte, tc.request)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.reset {
				cli.SetLinger(0) // close sends RST
			}
			cli.Close()
			if tc.reset {
				deadline := time.Now().Add(5 * time.Second)
				for tcpState(t, srv) != tcpClose {
					if time.Now().After(deadline) {
						t.Fatal("premise: the peer's reset did not end the connection within 5 s")
					}
					time.Sleep(time.Millisecond)
				}
			} else {
				waitReadable(t, srv, true)
			}
			if err := closeOutOfDescriptors(t, h, srv); err != nil {
				t.Errorf("Close = %v", err)
			}
			r := h.next(t, 5*time.Second)
			if r.Outcome != tc.want || r.Err != nil || r.Discarded != int64(tc.request) {
				t.Errorf("report %v %v, discarded %d; want %v, no error, %d (plain for EMFILE: a duplicate was tried)",
					r.Outcome, r.Err, r.Discarded, tc.want, tc.request)
			}
			if epOf(h.Closer) != nil {
				t.Errorf("the loop made an epoll set for a peer that had already gone")
			}
		})
	}
}

// TestPastBudgetNeedsNoDuplicate: a peer that has sent more than its byte
// budget before the hand-off has nothing left to linger for, and its
// socket is closed plainly in Close, with no duplicate: with no descriptor
// to spare, the report must still say budget, not plain for EMFILE. Under
// pressure, where the budget is small, SIOCINQ finds such a peer before
// anything is read, so nothing is discarded.
func TestPastBudgetNeedsNoDuplicate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		silent   int   // silent peers handed off first, to make pressure
		sent     int   // bytes the peer sends before the hand-off
		budget   int64 // the budget that applies
		readNone bool  // nothing is read: SIOCINQ decides
	}{
		{"budget", Config{MaxDiscard: 4 << 10}, 0, 16 << 10, 4 << 10, false},
		{"pressure", Config{MaxConns: 4, MaxDiscard: 4 << 20, PressureDiscard: 16 << 10}, 3, 64 << 10, 16 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newCountedHarness(t, tc.cfg, false)
			ln := listen(t)
			for i := range tc.silent {
				s, _ := pair(t, ln, net.IPv4(127, 0, 0, byte(2+i)))
				h.Close(s)
			}
			srv, cli := pair(t, ln, nil)
			if _, err := cli.Write(make([]byte, tc.sent)); err != nil {
				t.Fatal(err)
			}
			waitUnread(t, srv, int(tc.budget)+1)
			if err := closeOutOfDescriptors(t, h, srv); err != nil {
				t.Errorf("Close = %v", err)
			}
			r := h.next(t, 5*time.Second)
			if r.Outcome != Budget || r.Err != nil {
				t.Fatalf("report %v %v; want budget, no error (plain for EMFILE: a duplicate was tried)", r.Outcome, r.Err)
			}
			switch {
			case tc.readNone && r.Discarded != 0:
				t.Errorf("discarded %d, want 0: SIOCINQ showed the peer past its budget", r.Discarded)
			case !tc.readNone && (r.Discarded <= tc.budget || r.Discarded > int64(tc.sent)):
				t.Errorf("discarded %d, want just over the budget %d", r.Discarded, tc.budget)
			}
			if s := h.Stats(); s.Lingering != tc.silent || s.Outcomes[Budget] != 1 {
				t.Errorf("stats: %d lingering, %d budget endings; want %d silent and 1", s.Lingering, s.Outcomes[Budget], tc.silent)
			}
		})
	}
}

// TestPendingRequestDrainedInline: bytes already queued when the caller
// closes are discarded by Close itself, before the loop ever sees the
// socket; the socket lingers for the rest.
func TestPendingRequestDrainedInline(t *testing.T) {
	h := newHarness(t, Config{}, false)
	ln := listen(t)
	srv, cli := pair(t, ln, nil)
	if _, err := cli.Write(make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	waitReadable(t, srv, false)
	start := time.Now()
	if err := h.Close(srv); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	h.mu.Lock()
	e := h.all.front
	var inline int64 = -1
	if e != nil {
		inline = e.discarded
	}
	h.mu.Unlock()
	if inline != 1024 {
		t.Errorf("discarded %d bytes by the time Close returned, want the 1024 pending", inline)
	}
	if took > 100*time.Millisecond {
		t.Errorf("Close took %v", took)
	}
	cli.Close()
	if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed || r.Discarded != 1024 {
		t.Errorf("report %v, discarded %d; want peer_closed, 1024", r.Outcome, r.Discarded)
	}
}

// TestLoopGrace: the epoll set and its goroutine stay for loopGrace after
// the last socket leaves, so the next hand-off reuses them, and then end on
// their own; Shutdown ends them at once.
func TestLoopGrace(t *testing.T) {
	lifecycle := func(h *harness, ln *net.TCPListener) (released time.Time) {
		srv, cli := pair(t, ln, nil)
		if err := h.Close(srv); err != nil {
			t.Fatal(err)
		}
		cli.Close()
		if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed {
			t.Fatalf("outcome %v, want peer_closed", r.Outcome)
		}
		return time.Now()
	}
	t.Run("reused, then ends", func(t *testing.T) {
		h := newHarness(t, Config{}, false)
		ln := listen(t)
		lifecycle(h, ln)
		first := epsOf(h.Closer)
		released := lifecycle(h, ln)
		second := epsOf(h.Closer)
		// The premise: the second release came well within the grace.
		if time.Since(released) < 500*time.Millisecond {
			kept := 0
			for i := range first {
				if first[i] != nil && second[i] != first[i] {
					t.Errorf("shard %d: epoll set %p after the first release, %p after the second: want the same one kept", i, first[i], second[i])
				}
				if first[i] != nil {
					kept++
				}
			}
			if kept == 0 {
				t.Errorf("no epoll set after the first release: want it kept for %v", loopGrace)
			}
			sets := 0
			for _, ep := range second {
				if ep != nil {
					sets++
				}
			}
			if sets != 1 {
				t.Errorf("%d epoll sets after two connections one at a time, want 1: each shard woke in turn", sets)
			}
		} else {
			t.Logf("premise not met (a loaded machine?): %v passed after the release", time.Since(released))
		}
		deadline := released.Add(loopGrace + 3*time.Second)
		for epOf(h.Closer) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("the epoll set still exists %v after the last release", time.Since(released))
			}
			time.Sleep(10 * time.Millisecond)
		}
		if gone := time.Since(released); gone < loopGrace*9/10 {
			t.Errorf("the epoll set went %v after the last release, want about %v", gone, loopGrace)
		}
	})

	t.Run("shutdown ends it at once", func(t *testing.T) {
		h := newHarness(t, Config{}, false)
		ln := listen(t)
		lifecycle(h, ln)
		start := time.Now()
		if err := h.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Errorf("Shutdown took %v with nothing lingering, want far less than the %v grace", took, loopGrace)
		}
		if epOf(h.Closer) != nil {
			t.Errorf("epoll set left after Shutdown")
		}
	})
}

// TestShardsEnd: the event loop has a shard per P, and sockets lingering
// at once spread over all of them; each shard's epoll set and goroutine
// end about loopGrace after its last socket leaves, and every one at once
// on Shutdown, even with sockets still lingering (goleak in TestMain
// checks that the goroutines are gone).
func TestShardsEnd(t *testing.T) {
	for _, shutdown := range []bool{false, true} {
		t.Run(fmt.Sprintf("shutdown=%v", shutdown), func(t *testing.T) {
			h := newHarness(t, Config{}, false)
			n := len(h.be.(*loops).shards)
			if n < 2 {
				t.Skipf("premise: GOMAXPROCS is %d, so there is one shard", runtime.GOMAXPROCS(0))
			}
			ln := listen(t)
			var clis []*net.TCPConn
			for range 2 * n {
				srv, cli := pair(t, ln, nil)
				if err := h.Close(srv); err != nil {
					t.Fatal(err)
				}
				clis = append(clis, cli)
			}
			for i, ep := range epsOf(h.Closer) {
				if ep == nil {
					t.Fatalf("shard %d of %d has no epoll set with %d sockets lingering", i, n, 2*n)
				}
			}
			start := time.Now()
			if shutdown {
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // release the lingering sockets at once
				if err := h.Shutdown(ctx); err == nil {
					t.Errorf("Shutdown with a canceled context and %d sockets lingering returned nil", 2*n)
				}
				if took := time.Since(start); took > loopGrace/2 {
					t.Errorf("Shutdown took %v, want far less than the %v grace: a shard waited it out", took, loopGrace)
				}
				for i, ep := range epsOf(h.Closer) {
					if ep != nil {
						t.Errorf("shard %d: epoll set left after Shutdown returned", i)
					}
				}
				for range 2 * n {
					if r := h.next(t, time.Second); r.Outcome != Shutdown {
						t.Errorf("outcome %v, want shutdown", r.Outcome)
					}
				}
				return
			}
			for _, cli := range clis {
				cli.Close()
			}
			for range 2 * n {
				if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed {
					t.Errorf("outcome %v, want peer_closed", r.Outcome)
				}
			}
			released := time.Now()
			for epOf(h.Closer) != nil {
				if time.Since(released) > loopGrace+3*time.Second {
					t.Fatalf("epoll sets %v still there %v after the last release", epsOf(h.Closer), time.Since(released))
				}
				time.Sleep(10 * time.Millisecond)
			}
			if gone := time.Since(start); gone < loopGrace*9/10 {
				t.Errorf("the last epoll set went %v after the sockets were handed off, want at least about %v", gone, loopGrace)
			}
		})
	}
}

// TestOtherDescriptorHeld: when the application keeps another descriptor of
// a socket (from File), the socket outlives our close, and so may its epoll
// registration. The loop deregisters every socket it ends while it can
// still report, and one it ends after its one-shot event reports nothing
// more: either way later sockets, which may reuse the descriptor number,
// linger normally, and the loop does not spin on the socket left behind.
func TestOtherDescriptorHeld(t *testing.T) {
	h := newHarness(t, Config{IdleTimeout: 200 * time.Millisecond}, false)
	ln := listen(t)
	// The peer sends after the hand-off and closes: ended by an event.
	// The second peer stays silent: ended by the idle timer, armed.
	var files []*os.File
	var clis []*net.TCPConn
	for _, closes := range []bool{true, false} {
		srv, cli := pair(t, ln, nil)
		f, err := srv.File()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		clis = append(clis, cli)
		if err := h.Close(srv); err != nil {
			t.Fatal(err)
		}
		if closes {
			cli.Write(make([]byte, 512))
			cli.Close()
		}
		want := PeerClosed
		if !closes {
			want = Idle
		}
		if r := h.next(t, 5*time.Second); r.Outcome != want {
			t.Fatalf("outcome %v, want %v", r.Outcome, want)
		}
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	// Both have ended, but File keeps their sockets and so their epoll
	// registrations alive: none may still be armed for input, or the
	// traffic below would wake the loop for sockets it no longer owns.
	if n := armedRegistrations(t, h.Closer); n != 0 {
		t.Errorf("%d epoll registrations still armed for input after their sockets ended", n)
	}
	// The sockets left behind get traffic: the silent peer sends and
	// resets; the first one is closed both ways already.
	clis[1].Write(make([]byte, 512))
	clis[1].SetLinger(0)
	clis[1].Close()
	cpu0 := processCPU()
	for range 3 {
		srv, cli := pair(t, ln, nil)
		h.Close(srv)
		cli.Write(make([]byte, 100))
		cli.Close()
		if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed {
			t.Errorf("a later connection: outcome %v, want peer_closed", r.Outcome)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if cpu := processCPU() - cpu0; cpu > 150*time.Millisecond {
		t.Errorf("the process used %v of CPU in 300 ms with nothing lingering: the loop spins", cpu)
	}
}

// armedRegistrations counts the registrations in c's epoll set still armed
// for input, as the kernel lists them in the set's /proc fdinfo ("tfd: N
// events: HEX ..."): a one-shot registration that has reported keeps only
// its flag bits. It returns 0 when the set does not exist.
func armedRegistrations(t *testing.T, c *Closer) int {
	t.Helper()
	c.mu.Lock()
	var b []byte
	var err error
	for _, l := range c.be.(*loops).shards {
		if l.ep == nil || err != nil {
			continue
		}
		// Read under the lock, so the loop cannot close the set meanwhile.
		var info []byte
		info, err = os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", l.fd()))
		b = append(b, info...)
	}
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "tfd:" || f[2] != "events:" {
			continue
		}
		ev, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil {
			t.Fatalf("fdinfo line %q: %v", line, err)
		}
		if ev&(unix.EPOLLIN|unix.EPOLLRDHUP) != 0 {
			n++
		}
	}
	return n
}

// TestUnackedUnknown: an entry whose send queue was never read (SIOCOUTQ
// failed at the hand-off) and cannot be read at its release either reports
// Unacked -1, unknown, not 0, which would claim the peer got everything.
func TestUnackedUnknown(t *testing.T) {
	h := newHarness(t, Config{}, false)
	// SIOCOUTQ fails on a descriptor that is not a socket (ENOTTY).
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := &entry{fd: int32(fd), heapIdx: -1, flags: outqUnknown}
	l := h.be.(*loops).shards[0]
	h.mu.Lock()
	if h.admit(e, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 1), 0) != nil {
		h.mu.Unlock()
		unix.Close(fd)
		t.Fatal("admit refused the entry")
	}
	for int(e.fd) >= len(l.set.byFD) {
		l.set.byFD = append(l.set.byFD, nil)
	}
	l.set.byFD[e.fd] = e
	heap.Push(&l.timers, e)
	l.finish(e, Idle, nil, false) // closes fd in unlock
	h.unlock()
	if r := h.next(t, time.Second); r.Unacked != -1 {
		t.Errorf("Unacked %d, want -1: nothing was ever known of the send queue", r.Unacked)
	}
}
