//go:build linux

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/connerr"
)

// pinFlags sizes "pin": one IP address pinning the server's resources
// through connections that read slowly on purpose.
type pinFlags struct {
	n       int           // attacking connections
	resp    int           // response bytes the server tries to write to each
	write   time.Duration // the server's write timeout for that response
	sndbuf  int           // the server's SO_SNDBUF (0: the kernel's autotuning)
	d       time.Duration // how long to watch
	maxHold time.Duration // Config.MaxHold in the linger modes (0: default)
	perIP   int           // Config.MaxConnsPerIP in the linger-perip mode
}

// PinResult is one mode's run of "pin".
type PinResult struct {
	Mode  string `json:"mode"`
	N     int    `json:"conns"`
	PerIP int    `json:"max_conns_per_ip,omitempty"`
	// Sockets counts the server's TCP sockets on the port (lingering or
	// orphaned, not the listener), and Queued the kernel memory of their
	// send queues (ss's skmem wmem_queued), at the peak.
	Sockets int   `json:"peak_sockets"`
	Queued  int64 `json:"peak_send_queue_bytes"`
	// Lingering is the peak of Stats().Lingering.
	Lingering int `json:"peak_lingering"`
	// Freed is the time from the first connection until the server held
	// no socket on the port any more (0: not within the run), and Held the
	// time the attack kept more than 1 MiB queued.
	Freed time.Duration `json:"freed_ns"`
	// At10s are the sockets and send-queue memory 10 s into the attack,
	// when a plain close has long freed everything: what the attack holds
	// for as long as it lasts.
	SocketsAt10s int               `json:"sockets_at_10s"`
	QueuedAt10s  int64             `json:"send_queue_bytes_at_10s"`
	Held         time.Duration     `json:"held_1mib_ns"`
	Outcomes     map[string]uint64 `json:"outcomes,omitempty"`
	// Written is the response bytes the server got queued, in all.
	Written int64 `json:"written_bytes"`
}

// pin runs scenario "pin": n connections from 127.0.0.2, each with a 4 KiB
// receive window that it never reads, trickling one byte a second so that
// it always looks active. The server writes a large response to each for
// its write timeout, then closes: plainly, or through a Closer. Every
// 250 ms the server's sockets and their send queues are counted with ss.
func pin(ctx context.Context, mode string, f pinFlags) (PinResult, error) {
	r := PinResult{Mode: mode, N: f.n, SocketsAt10s: -1}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return r, err
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()

	var lc *linger.Closer
	if mode != "plain" {
		cfg := linger.Config{MaxHold: f.maxHold}
		switch mode {
		case "linger-perip":
			cfg.MaxConnsPerIP = f.perIP
			r.PerIP = f.perIP
		case "linger-noperip":
			cfg.MaxConnsPerIP = -1
			r.PerIP = -1
		case "linger":
		default:
			return r, fmt.Errorf("unknown mode %q", mode)
		}
		if lc, err = linger.New(cfg); err != nil {
			return r, err
		}
		defer func() {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			lc.Shutdown(cctx)
		}()
	}

	var written atomic.Int64
	var serving sync.WaitGroup
	serving.Add(1)
	go func() {
		defer serving.Done()
		resp := make([]byte, f.resp)
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			serving.Add(1)
			go func() {
				defer serving.Done()
				// A real server's write timeout, shortened: whatever the
				// kernel took by then stays queued.
				if f.sndbuf > 0 {
					c.SetWriteBuffer(f.sndbuf)
				}
				c.SetWriteDeadline(time.Now().Add(f.write))
				n, _ := c.Write(resp)
				written.Add(int64(n))
				if lc != nil {
					lc.Close(c)
				} else {
					c.Close()
				}
			}()
		}
	}()

	// The attacker.
	var mu sync.Mutex
	var conns []*net.TCPConn
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)},
		Timeout:   5 * time.Second,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) {
				// Before connect, so the window it advertises is small.
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return serr
		},
	}
	start := time.Now()
	dialed := make(chan struct{})
	var dialedAt time.Time // written before dialed closes
	go func() {
		defer close(dialed)
		defer func() { dialedAt = time.Now() }()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for range f.n {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c.(*net.TCPConn))
				mu.Unlock()
			}()
		}
		wg.Wait()
	}()
	stopTrickle := make(chan struct{})
	var trickling sync.WaitGroup
	trickling.Add(1)
	go func() {
		defer trickling.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
			}
			mu.Lock()
			live := conns[:0]
			for _, c := range conns {
				c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				if _, err := c.Write([]byte{'x'}); err != nil && !connerr.IsTimeout(err) {
					c.Close() // reset by the server: its socket is gone
					continue
				}
				live = append(live, c)
			}
			conns = live
			mu.Unlock()
		}
	}()

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var heldSince time.Time
	// Watch for f.d, and in any case until the last connection had its
	// write timeout and MaxHold to end, and 10 s more: on a loaded machine
	// the dialling alone can take seconds, and a socket released with
	// bytes still queued lives on as an orphan until the peer's next
	// trickled byte resets it, so a smoke-sized window would blame the
	// server for sockets it was still allowed to hold. A run that frees
	// everything in time stops a second after, as before.
	hold := f.maxHold
	if hold <= 0 {
		hold = 30 * time.Second // Config.MaxHold's default
	}
	watching := func() bool {
		if time.Since(start) < f.d {
			return true
		}
		select {
		case <-dialed:
			return r.Freed == 0 && time.Since(dialedAt) < f.write+hold+10*time.Second
		default:
			return true
		}
	}
	for watching() {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-tick.C:
		}
		socks, queued, err := serverSockets(addr)
		if err != nil {
			return r, err
		}
		r.Sockets = max(r.Sockets, socks)
		if time.Since(start) >= 10*time.Second && r.SocketsAt10s < 0 {
			r.SocketsAt10s, r.QueuedAt10s = socks, queued
		}
		r.Queued = max(r.Queued, queued)
		if lc != nil {
			r.Lingering = max(r.Lingering, lc.Stats().Lingering)
		}
		switch {
		case queued > 1<<20 && heldSince.IsZero():
			heldSince = time.Now()
		case queued <= 1<<20 && !heldSince.IsZero():
			r.Held += time.Since(heldSince)
			heldSince = time.Time{}
		}
		select {
		case <-dialed:
			if socks == 0 && r.Freed == 0 {
				r.Freed = time.Since(start)
			}
		default:
		}
		if r.Freed > 0 && time.Since(start) > r.Freed+time.Second {
			break
		}
	}
	if !heldSince.IsZero() {
		r.Held += time.Since(heldSince)
	}
	close(stopTrickle)
	trickling.Wait()
	<-dialed
	ln.Close()
	mu.Lock()
	for _, c := range conns {
		c.SetLinger(0)
		c.Close()
	}
	mu.Unlock()
	serving.Wait()
	r.Written = written.Load()
	if lc != nil {
		r.Outcomes = map[string]uint64{}
		for o, n := range lc.Stats().Outcomes {
			if n > 0 {
				r.Outcomes[o.String()] = n
			}
		}
	}
	return r, nil
}

// serverSockets counts the TCP sockets, other than listeners and those in
// TIME_WAIT, whose local address is addr, and sums the kernel memory of
// their send queues, as ss shows them (skmem's w: wmem_queued). The
// address, not only the port: a bind on another address may get the same
// port number, as the peers of flood, hold and held do on 127.66.x.x. Not
// TIME_WAIT: such a socket holds no queue and no descriptor, and an
// earlier benchmark's may sit on the same address for a minute, since a
// listener (SO_REUSEADDR) may bind over it.
func serverSockets(addr netip.AddrPort) (n int, queued int64, err error) {
	cmd := exec.Command("ss", "-tnmH", "state", "connected", "exclude", "time-wait", fmt.Sprintf("( src %s )", addr))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("ss (iproute2): %w", err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "skmem:(")
		if i < 0 {
			n++ // a socket line; its skmem comes on the next line
			continue
		}
		for _, f := range strings.Split(strings.TrimSuffix(line[i+len("skmem:("):], ")"), ",") {
			if v, ok := strings.CutPrefix(f, "w"); ok {
				if k, err := strconv.ParseInt(v, 10, 64); err == nil {
					queued += k
				}
			}
		}
		if !strings.HasPrefix(strings.TrimSpace(line), "skmem:") {
			n++ // socket and skmem on one line
		}
	}
	io.Copy(io.Discard, out)
	return n, queued, cmd.Wait()
}

func printPin(w io.Writer, f pinFlags, rs []PinResult) {
	if len(rs) == 0 {
		return
	}
	sndbuf := "autotuned"
	if f.sndbuf > 0 {
		sndbuf = fmt.Sprintf("%d KiB", f.sndbuf>>10)
	}
	fmt.Fprintf(w, "pin: %d connections from one IP, 4 KiB receive window never read, 1 byte/s sent; the server writes %d KiB to each for %v (SO_SNDBUF %s), then closes\n",
		f.n, f.resp>>10, f.write, sndbuf)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tpeak sockets\tpeak send queues\tsockets at 10 s\tsend queues at 10 s\tpeak lingering\t>1 MiB held for\tall freed after\tqueued by the server\toutcomes\t")
	for _, r := range rs {
		mode := r.Mode
		if r.PerIP > 0 {
			mode = fmt.Sprintf("%s (%d)", r.Mode, r.PerIP)
		}
		if r.Mode == "linger" {
			mode = "linger (defaults)"
		}
		freed := "not within the run"
		if r.Freed > 0 {
			freed = fmt.Sprintf("%.1f s", r.Freed.Seconds())
		}
		at10 := "-\t-" // the run was shorter
		switch {
		case r.SocketsAt10s >= 0:
			at10 = fmt.Sprintf("%d\t%.1f MiB", r.SocketsAt10s, float64(r.QueuedAt10s)/(1<<20))
		case r.Freed > 0 && r.Freed < 10*time.Second:
			at10 = "0\t0 MiB" // all freed before, and the run ended
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f MiB\t%s\t%d\t%.1f s\t%s\t%.1f MiB\t%v\t\n", mode, r.Sockets, float64(r.Queued)/(1<<20),
			at10, r.Lingering, r.Held.Seconds(), freed, float64(r.Written)/(1<<20), r.Outcomes)
	}
	tw.Flush()
	fmt.Fprintln(w)
}
