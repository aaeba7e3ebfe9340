//go:build linux

package netns

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
)

func TestMain(m *testing.M) {
	testbed.StartPoller()
	goleak.VerifyTestMain(m)
}

// newPair makes a pair that the test's cleanup closes, also when the test
// fails half way.
func newPair(t *testing.T, cfg PathConfig) *Pair {
	t.Helper()
	testbed.RequireRoot(t, "network namespace test")
	p, err := NewPair(cfg)
	if errors.Is(err, exec.ErrNotFound) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatalf("NewPair(%v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func addrPort(ip netip.Addr, ln net.Listener) string {
	return netip.AddrPortFrom(ip, ln.Addr().(*net.TCPAddr).AddrPort().Port()).String()
}

// echoServer accepts on ln and echoes every connection until ln is closed.
func echoServer(t *testing.T, ln net.Listener) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
}

func nsInode(t *testing.T) string {
	t.Helper()
	s, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPairTCP(t *testing.T) {
	p := newPair(t, PathConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	ln, err := p.Server.Listen("tcp", p.ServerIP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	c, err := p.Client.DialContext(ctx, "tcp", addrPort(p.ServerIP, ln))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != p.ClientIP {
		t.Errorf("client address %v, want %v", got, p.ClientIP)
	}
	msg := bytes.Repeat([]byte("linger "), 10000) // many segments
	go c.Write(msg)
	got := make([]byte, len(msg))
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %v, equal %v", err, bytes.Equal(got, msg))
	}

	// Loopback is up inside.
	lo, err := p.Client.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, lo)
	lc, err := p.Client.DialContext(ctx, "tcp", lo.Addr().String())
	if err != nil {
		t.Fatalf("loopback in the namespace: %v", err)
	}
	lc.Close()

	// Nothing leads out of the namespace: there is no default route.
	_, err = p.Client.DialContext(ctx, "tcp", "198.51.100.1:9")
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("dial outside: got %v, want ENETUNREACH", err)
	}

	// Do switches the thread and switches it back.
	outside := nsInode(t)
	var inside string
	if err := p.Server.Do(func() error { inside = nsInode(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside == outside {
		t.Errorf("Do ran in the caller's namespace %s", inside)
	}

	// Command runs inside.
	out, err := p.Server.Command(ctx, "ip", "-o", "-4", "addr", "show", "dev", devName).CombinedOutput()
	if err != nil || !strings.Contains(string(out), p.ServerIP.String()+"/24") {
		t.Errorf("Command: %v: %s", err, out)
	}
}

// probeLoss sends n numbered UDP datagrams from the client to an echo
// server and reports the fractions received by the server (one way) and
// echoed back (round trip).
func probeLoss(t *testing.T, p *Pair, n int) (oneWay, roundTrip float64) {
	t.Helper()
	// Probes 0..n-1 are counted; then end markers (n and up) follow,
	// enough of them that one gets through any loss rate tested here.
	// Every path keeps order, so when the client sees a marker echoed,
	// every probe that was going to arrive has arrived, and the server's
	// count when it first saw a marker is final. Waiting for the marker,
	// instead of for a fixed time, keeps a loaded machine's late
	// goroutines from counting as loss.
	const markers = 40
	srv, err := p.Server.ListenPacket("udp", p.ServerIP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// Large enough to hold every probe even if the reader is late.
	srv.(*net.UDPConn).SetReadBuffer(4 << 20)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer srv.Close() // first: ends the echo goroutine
	received, receivedAtMarker := 0, -1
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			m, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			if m == 8 && binary.BigEndian.Uint64(buf) >= uint64(n) {
				if receivedAtMarker < 0 {
					receivedAtMarker = received
				}
			} else {
				received++
			}
			srv.WriteTo(buf[:m], from)
		}
	})

	cli, err := p.Client.ListenPacket("udp", p.ClientIP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cli.(*net.UDPConn).SetReadBuffer(4 << 20)
	to := net.UDPAddrFromAddrPort(srv.LocalAddr().(*net.UDPAddr).AddrPort())
	seen := make([]bool, n)
	echoed := 0
	done := make(chan struct{})
	marked := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		gotMarker := false
		for {
			m, _, err := cli.ReadFrom(buf)
			if err != nil {
				return
			}
			if m != 8 {
				continue
			}
			switch i := binary.BigEndian.Uint64(buf); {
			case i < uint64(n) && !seen[i]:
				seen[i] = true
				echoed++
			case i >= uint64(n) && !gotMarker:
				gotMarker = true
				close(marked)
			}
		}
	}()
	// Paced so that no socket buffer overflows: those drops are not the
	// path's.
	for i := range n + markers {
		if _, err := cli.WriteTo(binary.BigEndian.AppendUint64(nil, uint64(i)), to); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	select {
	case <-marked:
	case <-time.After(10*time.Second + 2*p.Path.Delay):
		t.Logf("no end marker came back within 10s; counting what arrived")
	}
	cli.SetReadDeadline(time.Now()) // ends the reader
	<-done
	srv.Close()
	wg.Wait()
	if receivedAtMarker >= 0 {
		received = receivedAtMarker
	}
	return float64(received) / float64(n), float64(echoed) / float64(n)
}

func TestPairLoss(t *testing.T) {
	const n = 1000
	for _, cfg := range []PathConfig{
		{Loss: 0.2},
		{Delay: 5 * time.Millisecond, Loss: 0.2},
	} {
		t.Run(cfg.String(), func(t *testing.T) {
			p := newPair(t, cfg)
			oneWay, roundTrip := probeLoss(t, p, n)
			t.Logf("%v: %d probes, %.1f%% arrived, %.1f%% echoed (expected %.0f%% and %.0f%%)",
				cfg, n, oneWay*100, roundTrip*100, (1-cfg.Loss)*100, (1-cfg.Loss)*(1-cfg.Loss)*100)
			// The binomial standard deviation is about 1.3 points here;
			// the margins are several times that.
			if oneWay < 0.70 || oneWay > 0.90 {
				t.Errorf("one way: %.1f%% arrived, want 70..90%%", oneWay*100)
			}
			if roundTrip < 0.54 || roundTrip > 0.74 {
				t.Errorf("round trip: %.1f%% echoed, want 54..74%%", roundTrip*100)
			}
			if p.fwd != nil {
				t.Logf("forwarder: %d forwarded, %d lost, %d overflowed",
					p.fwd.forwarded.Load(), p.fwd.lost.Load(), p.fwd.overflowed.Load())
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		p := newPair(t, PathConfig{})
		oneWay, roundTrip := probeLoss(t, p, 200)
		if oneWay != 1 || roundTrip != 1 {
			t.Errorf("lossless path: %.1f%% arrived, %.1f%% echoed", oneWay*100, roundTrip*100)
		}
	})
}

func TestPairDelay(t *testing.T) {
	p := newPair(t, PathConfig{Delay: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ln, err := p.Server.Listen("tcp", p.ServerIP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)

	// A TCP connect takes one round trip: SYN out, SYN-ACK back.
	start := time.Now()
	c, err := p.Client.DialContext(ctx, "tcp", addrPort(p.ServerIP, ln))
	connect := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// Echo round trips on the open connection; the first may include
	// the server's accept, so take the fastest.
	best := time.Hour
	buf := make([]byte, 1)
	for range 5 {
		start := time.Now()
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		best = min(best, time.Since(start))
	}
	t.Logf("20ms each way: connect %v, echo RTT %v (best of 5)", connect, best)
	for what, d := range map[string]time.Duration{"connect": connect, "echo RTT": best} {
		if d < 40*time.Millisecond || d >= 200*time.Millisecond {
			t.Errorf("%s took %v, want 40ms..200ms", what, d)
		}
	}
}

// TestCountersRST shows the effect linger exists for: a server that closes
// a socket with unread received data sends RST, and the namespace's own
// counters see it.
func TestCountersRST(t *testing.T) {
	p := newPair(t, PathConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ln, err := p.Server.Listen("tcp", p.ServerIP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// exchange connects, sends 100 bytes to the server, and closes the
	// server's end after reading them (drain) or not; it returns what
	// the client's read saw.
	exchange := func(drain bool) error {
		c, err := p.Client.DialContext(ctx, "tcp", addrPort(p.ServerIP, ln))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if drain {
			if _, err := io.ReadFull(s, make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
		} else {
			// Wait for the bytes to be queued without reading them.
			time.Sleep(50 * time.Millisecond)
		}
		s.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		return err
	}

	count := func(ns *Namespace) Counters {
		c, err := ns.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	before, clientBefore := count(p.Server), count(p.Client)
	if err := exchange(true); err != io.EOF {
		t.Errorf("server read everything, then closed: client read %v, want EOF", err)
	}
	d := count(p.Server).Sub(before)
	t.Logf("drained close: OutRsts +%d, AbortOnClose +%d", d.OutRsts, d.AbortOnClose)
	if d.OutRsts != 0 || d.AbortOnClose != 0 {
		t.Errorf("drained close sent RST: OutRsts +%d, AbortOnClose +%d", d.OutRsts, d.AbortOnClose)
	}

	before = count(p.Server)
	if err := exchange(false); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("server closed with unread data: client read %v, want ECONNRESET", err)
	}
	d = count(p.Server).Sub(before)
	t.Logf("close with unread data: OutRsts +%d, AbortOnClose +%d", d.OutRsts, d.AbortOnClose)
	if d.OutRsts < 1 || d.AbortOnClose != 1 || d.All["TcpOutRsts"] != d.OutRsts {
		t.Errorf("close with unread data: OutRsts +%d, AbortOnClose +%d, want >=1 and 1", d.OutRsts, d.AbortOnClose)
	}
	// The counters are the namespace's own: the client sent no RST.
	if d := count(p.Client).Sub(clientBefore); d.OutRsts != 0 || d.AbortOnClose != 0 {
		t.Errorf("client namespace: OutRsts +%d, AbortOnClose +%d, want 0", d.OutRsts, d.AbortOnClose)
	}
}

func netnsList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	return string(out)
}

// TestCloseRemovesEverything must not run in parallel with other tests:
// it counts the process's goroutines and descriptors.
func TestCloseRemovesEverything(t *testing.T) {
	testbed.RequireRoot(t, "network namespace test")
	for _, cfg := range []PathConfig{
		{Loss: 0.05},
		{Delay: 2 * time.Millisecond, Loss: 0.05},
	} {
		t.Run(cfg.String(), func(t *testing.T) {
			fds, links := proc.OpenFDs(), fdLinks()
			p, err := NewPair(cfg)
			if errors.Is(err, exec.ErrNotFound) {
				t.Skipf("skipping: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			names := []string{p.Server.Name, p.Client.Name}
			list := netnsList(t)
			for _, name := range names {
				if !strings.Contains(list, name) {
					t.Errorf("namespace %s not in ip netns list:\n%s", name, list)
				}
			}
			// Some traffic, so the forwarder is busy while it stops.
			ln, err := p.Server.Listen("tcp", p.ServerIP.String()+":0")
			if err != nil {
				t.Fatal(err)
			}
			c, err := p.Client.DialContext(context.Background(), "tcp", addrPort(p.ServerIP, ln))
			if err != nil {
				t.Fatal(err)
			}
			go c.Write(make([]byte, 1<<20))
			time.Sleep(20 * time.Millisecond)
			c.Close()
			ln.Close()

			if err := p.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := p.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			list = netnsList(t)
			for _, name := range names {
				if strings.Contains(list, name) {
					t.Errorf("namespace %s still in ip netns list after Close", name)
				}
			}
			if err := p.Server.Do(func() error { return nil }); err == nil {
				t.Error("Do after Close succeeded")
			}
			goleak.VerifyNone(t)
			// Compared as sets of descriptors and what they refer to, so
			// that descriptors closed meanwhile elsewhere do not hide one
			// we leaked: an earlier test's io.Copy between TCP
			// connections spliced through a pipe from internal/poll's
			// pool, and the pool closes it at some later GC.
			after, afterLinks := proc.OpenFDs(), fdLinks()
			for l := range afterLinks {
				if !links[l] {
					t.Errorf("descriptor %s open after Close, not before NewPair", l)
				}
			}
			if after != fds {
				t.Logf("open descriptors: %d before NewPair, %d after Close", fds, after)
			}
		})
	}
}

func TestCleanupStale(t *testing.T) {
	testbed.RequireRoot(t, "network namespace test")
	// A process id that is certainly dead: a child that has been reaped.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	stale := namePrefix + strconv.Itoa(cmd.Process.Pid) + "-1-s"
	if err := run("ip", "netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if strings.Contains(netnsList(t), stale) {
			run("ip", "netns", "delete", stale)
		}
	})
	p := newPair(t, PathConfig{})
	if err := CleanupStale(); err != nil {
		t.Fatal(err)
	}
	list := netnsList(t)
	if strings.Contains(list, stale) {
		t.Errorf("stale namespace %s survived CleanupStale", stale)
	}
	for _, name := range []string{p.Server.Name, p.Client.Name} {
		if !strings.Contains(list, name) {
			t.Errorf("CleanupStale removed %s of a live process", name)
		}
	}
}

// TestParallelPairs makes pairs concurrently, as parallel tests and a lab
// running beside them do: names and addresses must not collide.
func TestParallelPairs(t *testing.T) {
	testbed.RequireRoot(t, "network namespace test")
	for i := range 4 {
		cfg := PathConfig{}
		if i%2 == 1 {
			cfg.Delay = time.Millisecond
		}
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			p := newPair(t, cfg)
			ln, err := p.Server.Listen("tcp", p.ServerIP.String()+":0")
			if err != nil {
				t.Fatal(err)
			}
			echoServer(t, ln)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := p.Client.DialContext(ctx, "tcp", addrPort(p.ServerIP, ln))
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
	}
}

// fdLinks returns the open descriptors as "number=target" strings.
func fdLinks() map[string]bool {
	ents, _ := os.ReadDir("/proc/self/fd")
	m := make(map[string]bool)
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil { // the directory's own descriptor is gone already
			m[e.Name()+"="+l] = true
		}
	}
	return m
}
