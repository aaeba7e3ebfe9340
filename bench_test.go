//go:build linux

package linger

import (
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/linger-go/linger/internal/proc"
)

// Micro benchmarks; "linger bench" (internal/bench) measures whole
// processes. Compare runs with benchstat, e.g.
//
//	go test -run '^$' -bench . -count 6 . > new.txt && benchstat old.txt new.txt

// BenchmarkDiscard drains a loopback connection whose peer sends flat out,
// by recv(MSG_TRUNC) (the event loop) or by reading into a buffer (the
// portable backend's 32 KiB, nginx's 4 KiB). An op is 1 MiB drained;
// "B/cpu-s" is bytes drained per CPU-second of the draining thread alone,
// so the sender sharing the machine does not count.
func BenchmarkDiscard(b *testing.B) {
	for _, bc := range []struct {
		name string
		buf  int // 0: MSG_TRUNC
	}{{"trunc", 0}, {"read-32k", 32 << 10}, {"read-4k", 4 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			ln := benchListen(b)
			srv, cli := benchPair(b, ln)
			defer srv.Close()
			stop := flatOut(cli)
			defer stop()
			fd := rawFD(b, srv)
			var buf []byte
			if bc.buf > 0 {
				buf = make([]byte, bc.buf)
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			want := int64(b.N) << 20
			cpu0 := threadCPU()
			b.SetBytes(1 << 20)
			b.ResetTimer()
			for got := int64(0); got < want; {
				var n int
				var err error
				if buf == nil {
					n, err = recvDiscard(fd, 1<<30)
				} else {
					n, err = unix.Read(fd, buf)
				}
				switch {
				case err == unix.EAGAIN:
					// Wait in the kernel, not spinning, so the CPU time
					// counts only the draining.
					unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
				case err == unix.EINTR:
				case err != nil:
					b.Fatal(err)
				case n == 0:
					b.Fatal("sender stopped")
				default:
					got += int64(n)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(want)/(threadCPU()-cpu0).Seconds(), "B/cpu-s")
		})
	}
}

// BenchmarkLifecycle is one whole connection that ends with our last word:
// dial, accept, write 32 bytes, close our side, the peer reads and closes,
// until the server side is released. "plain" is conn.Close; "naive" is
// CloseWrite and io.Copy(io.Discard) in a goroutine; loop and portable
// hand the connection to a Closer. In the "-busy" variants another
// connection lingers throughout, as on a server under load, so the Closer's
// event loop never has to start or stop.
func BenchmarkLifecycle(b *testing.B) {
	for _, name := range []string{"plain", "naive", "loop", "portable", "loop-busy", "portable-busy"} {
		b.Run(name, func(b *testing.B) {
			mode := name
			ln := benchListen(b)
			released := make(chan struct{}, 1)
			var c *Closer
			if mode != "plain" && mode != "naive" {
				var err error
				busy := strings.HasSuffix(mode, "-busy")
				c, err = newCloser(Config{OnClose: func(r Report) {
					if !busy || r.Outcome != Shutdown {
						released <- struct{}{}
					}
				}, IdleTimeout: time.Hour, MaxHold: time.Hour}, strings.HasPrefix(mode, "portable"))
				if err != nil {
					b.Fatal(err)
				}
				defer func() {
					ctx, cancel := context.WithCancel(context.Background())
					cancel() // release the busy connection at once
					c.Shutdown(ctx)
				}()
				if busy {
					srv, cli := benchPair(b, ln)
					defer cli.Close()
					c.Close(srv)
				}
				mode = "linger"
			}
			msg := make([]byte, 32)
			cpu0 := processCPU()
			b.ResetTimer()
			for range b.N {
				srv, cli := benchPair(b, ln)
				srv.Write(msg)
				closeAs(mode, c, srv, released)
				io.ReadFull(cli, msg)
				cli.Close()
				<-released
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// closeAs closes srv as the lifecycle benchmarks' mode says: at once
// (plain), by a goroutine of its own that drains to EOF (naive, the
// goroutine per socket that linger replaces), or else through c, whose
// OnClose signals released. plain and naive signal released themselves.
func closeAs(mode string, c *Closer, srv *net.TCPConn, released chan<- struct{}) {
	switch mode {
	case "plain":
		srv.Close()
		released <- struct{}{}
	case "naive":
		srv.CloseWrite()
		go func() {
			io.Copy(io.Discard, srv)
			srv.Close()
			released <- struct{}{}
		}()
	default:
		c.Close(srv)
	}
}

// BenchmarkLifecycleServing is BenchmarkLifecycle with the server's side
// shaped like a server: a goroutine parked in Accept hands each connection
// to the mode's close, while the benchmark's goroutine is the client. A
// server always has a goroutine waiting in the runtime's poller (its accept
// loop), as the event loop's goroutine is while it lingers or waits out its
// grace period; BenchmarkLifecycle's naive mode has none between
// connections, which spares it the poller's wake-ups that every real server
// pays.
//
// In the plain modes the peer closes after our close, as a client does
// that reads our last word and leaves. In the "-peerclosed" and
// "-peerreset" modes it has closed (or reset, with SO_LINGER 0) before our
// close: as when net/http closes a connection 500 ms after its response
// because the request's body was left unread, or a client closes or resets
// before the server gets round to its close.
func BenchmarkLifecycleServing(b *testing.B) {
	for _, peer := range []string{"", "-peerclosed", "-peerreset"} {
		for _, mode := range []string{"plain", "naive", "loop", "portable"} {
			b.Run(mode+peer, func(b *testing.B) { lifecycleServing(b, mode, peer) })
		}
	}
}

func lifecycleServing(b *testing.B, mode, peer string) {
	ln := benchListen(b)
	released := make(chan struct{}, 1)
	// peerGone tells the server that the peer has closed, in the
	// "-peer…" modes; buffered, so the client never waits for it.
	peerGone := make(chan struct{}, 1)
	var c *Closer
	if mode == "loop" || mode == "portable" {
		var err error
		c, err = newCloser(Config{OnClose: func(Report) { released <- struct{}{} },
			IdleTimeout: time.Hour, MaxHold: time.Hour}, mode == "portable")
		if err != nil {
			b.Fatal(err)
		}
		defer c.Shutdown(context.Background())
	}
	reply := make([]byte, 32)
	defer acceptEach(ln, func(srv *net.TCPConn) {
		srv.Write(reply)
		if peer != "" {
			// On loopback the peer's FIN or RST has reached our
			// socket by the time its close returns.
			<-peerGone
		}
		closeAs(mode, c, srv, released)
	})()
	addr := ln.Addr().(*net.TCPAddr)
	msg := make([]byte, 32)
	cpu0 := processCPU()
	b.ResetTimer()
	for range b.N {
		cli, err := net.DialTCP("tcp", nil, addr)
		if err != nil {
			b.Fatal(err)
		}
		io.ReadFull(cli, msg)
		if peer == "-peerreset" {
			cli.SetLinger(0)
		}
		cli.Close()
		if peer != "" {
			peerGone <- struct{}{}
		}
		<-released
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// acceptEach accepts connections on ln and hands each to handle in the
// accepting goroutine itself, as a server's accept loop that closes
// connections would. stop closes ln and waits for the loop to end.
func acceptEach(ln *net.TCPListener, handle func(*net.TCPConn)) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			srv, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			handle(srv)
		}
	}()
	return func() {
		ln.Close()
		<-done
	}
}

func benchListen(b *testing.B) *net.TCPListener {
	b.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return ln
}

func benchPair(b *testing.B, ln *net.TCPListener) (srv, cli *net.TCPConn) {
	b.Helper()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		b.Fatal(err)
	}
	s, err := ln.AcceptTCP()
	if err != nil {
		b.Fatal(err)
	}
	return s, c
}

// flatOut writes to c as fast as it can until stopped.
func flatOut(c *net.TCPConn) (stop func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 256<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	return func() {
		c.SetWriteDeadline(time.Unix(1, 0))
		wg.Wait()
		c.Close()
	}
}

// rawFD returns c's descriptor, valid while c is open.
func rawFD(b *testing.B, c *net.TCPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var fd int
	rc.Control(func(s uintptr) { fd = int(s) })
	return fd
}

// processCPU is the CPU time of the whole process: both ends of the
// connection, so the benchmarks count the client's work too.
var processCPU = proc.CPUTime

// threadCPU is the calling OS thread's CPU time, user and system.
func threadCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDrain is a Closer draining peers that send flat out, each until
// it has discarded its share of b.N MiB and is released for the byte
// budget. An op is 1 MiB discarded; "cpu-ns/op" counts the whole process,
// the senders included, whose cost is the same for both backends.
func BenchmarkDrain(b *testing.B) {
	const peers = 4
	for _, name := range []string{"loop", "portable"} {
		b.Run(name, func(b *testing.B) {
			ln := benchListen(b)
			done := make(chan struct{}, peers)
			c, err := newCloser(Config{
				MaxDiscard: max(int64(b.N)<<20/peers, 1),
				OnClose:    func(Report) { done <- struct{}{} },
			}, name == "portable")
			if err != nil {
				b.Fatal(err)
			}
			defer c.Shutdown(context.Background())
			var stops []func()
			var srvs []*net.TCPConn
			for range peers {
				srv, cli := benchPair(b, ln)
				srvs = append(srvs, srv)
				stops = append(stops, flatOut(cli))
			}
			cpu0 := processCPU()
			b.SetBytes(1 << 20)
			b.ResetTimer()
			for _, srv := range srvs {
				c.Close(srv)
			}
			for range peers {
				<-done
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
			for _, stop := range stops {
				stop()
			}
		})
	}
}

// BenchmarkLifecycleConcurrent is BenchmarkLifecycleServing with 16
// clients at once and no pacing: each client dials, reads our 32 bytes
// and our FIN, and closes, and the benchmark waits only at the end for
// every server side to be released. A release wakes nobody (OnClose counts
// down a WaitGroup), as on a server whose OnClose only counts, so the
// figure is the work of the hand-offs and releases themselves, without
// the per-connection wake-up of a waiting client that the paced
// benchmarks pay.
func BenchmarkLifecycleConcurrent(b *testing.B) {
	for _, mode := range []string{"naive", "loop"} {
		b.Run(mode, func(b *testing.B) {
			ln := benchListen(b)
			var released sync.WaitGroup
			var c *Closer
			if mode == "loop" {
				var err error
				c, err = newCloser(Config{OnClose: func(Report) { released.Done() },
					IdleTimeout: time.Hour, MaxHold: time.Hour}, false)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Shutdown(context.Background())
			}
			released.Add(b.N)
			reply := make([]byte, 32)
			stop := acceptEach(ln, func(srv *net.TCPConn) {
				srv.Write(reply)
				if c != nil {
					c.Close(srv)
					return
				}
				srv.CloseWrite()
				go func() {
					io.Copy(io.Discard, srv)
					srv.Close()
					released.Done()
				}()
			})
			addr := ln.Addr().(*net.TCPAddr)
			var next atomic.Int64
			var clients sync.WaitGroup
			cpu0 := processCPU()
			b.ResetTimer()
			for range 16 {
				clients.Add(1)
				go func() {
					defer clients.Done()
					for next.Add(1) <= int64(b.N) {
						cli, err := net.DialTCP("tcp", nil, addr)
						if err != nil {
							b.Error(err)
							released.Done()
							continue
						}
						io.Copy(io.Discard, cli)
						cli.Close()
					}
				}()
			}
			clients.Wait()
			released.Wait()
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
			stop()
		})
	}
}
