package linger

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPressureRcvBuf: under pressure a lingering socket's receive buffer is
// clamped, at hand-off for a new one and at its next event for one that
// was lingering before; one handed off before the pressure that stays
// silent keeps what autotuning gave it.
func TestPressureRcvBuf(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{MaxConns: 4, MaxDiscard: 4 << 20, PressureDiscard: 64 << 10, IdleTimeout: 5 * time.Second}, be.portable)
			if h.rcvBuf == 0 {
				t.Fatal("no receive-buffer clamp configured")
			}
			// Linux doubles what SO_RCVBUF is set to.
			clamped := 2 * h.rcvBuf
			ln := listen(t)
			handOff := func(ip net.IP) netip.AddrPort {
				srv, cli := pair(t, ln, ip)
				h.Close(srv)
				return cli.LocalAddr().(*net.TCPAddr).AddrPort()
			}
			// Before the pressure: a slow sender, 1 KiB every 100 ms, below
			// the pressure budget for the test's 5 s, and a silent peer.
			srv, cli := pair(t, ln, net.IPv4(127, 0, 0, 2))
			stop := sendEvery(cli, 1<<10, 100*time.Millisecond)
			t.Cleanup(stop)
			h.Close(srv)
			sender := cli.LocalAddr().(*net.TCPAddr).AddrPort()
			silent := handOff(net.IPv4(127, 0, 0, 3))
			handOff(net.IPv4(127, 0, 0, 4)) // three of four: pressure from here
			late := handOff(net.IPv4(127, 0, 0, 5))

			bufs := lingeringRcvBufs(t, h.Closer)
			if got := bufs[late]; got != clamped {
				t.Errorf("socket handed off under pressure: SO_RCVBUF %d, want %d", got, clamped)
			}
			if got := bufs[silent]; got <= clamped {
				t.Errorf("silent socket handed off before the pressure: SO_RCVBUF %d, want above %d", got, clamped)
			}
			deadline := time.Now().Add(5 * time.Second)
			for bufs[sender] != clamped && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				bufs = lingeringRcvBufs(t, h.Closer)
			}
			if got, ok := bufs[sender]; !ok {
				t.Errorf("sender lingering since before the pressure: no longer lingering")
			} else if got != clamped {
				t.Errorf("sender lingering since before the pressure: SO_RCVBUF %d after 5 s of events under it, want %d", got, clamped)
			}
		})
	}
}

// sendEvery writes n bytes to c every pause in the background, until the
// returned function stops it.
func sendEvery(c net.Conn, n int, pause time.Duration) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		buf := make([]byte, n)
		for {
			select {
			case <-done:
				return
			case <-time.After(pause):
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	return func() { close(done); <-exited }
}

// lingeringRcvBufs reads SO_RCVBUF off every socket c holds, by peer
// address.
func lingeringRcvBufs(t *testing.T, c *Closer) map[netip.AddrPort]int {
	t.Helper()
	got := map[netip.AddrPort]int{}
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.all.front; e != nil; e = e.links[byAge].next {
		var n int
		var err error
		switch be := c.be.(type) {
		case *loops:
			n, err = unix.GetsockoptInt(int(e.fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		case portable:
			var rc syscall.RawConn
			rc, err = be.conns[e].(*net.TCPConn).SyscallConn()
			if err == nil {
				rc.Control(func(fd uintptr) {
					n, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
				})
			}
		}
		if err != nil {
			t.Fatalf("SO_RCVBUF of %v: %v", e.addr, err)
		}
		got[e.addr] = n
	}
	return got
}
