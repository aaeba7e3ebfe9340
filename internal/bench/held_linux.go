//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/proc"
)

// HeldResult is one mode's run of "held": n connections lingering at once.
type HeldResult struct {
	Mode string `json:"mode"`
	N    int    `json:"n"`
	// Per lingering connection, in bytes: live heap after a full GC,
	// goroutine stacks, the two together, and resident memory.
	HeapPerConn  float64 `json:"heap_per_conn"`
	StackPerConn float64 `json:"stack_per_conn"`
	GoPerConn    float64 `json:"go_per_conn"`
	RSSPerConn   float64 `json:"rss_per_conn"`
	// SlabPerConn is the growth of the kernel's socket slab caches per
	// connection, both ends together (the peers run on the same machine),
	// from /proc/slabinfo (as root; 0 otherwise); SlabCaches splits it.
	SlabPerConn float64            `json:"slab_per_conn_both_ends"`
	SlabCaches  map[string]float64 `json:"slab_caches_per_conn,omitempty"`
	Goroutines  int                `json:"goroutines_held"`
	// Handoff is how long accepting and handing off all n took.
	Handoff time.Duration `json:"handoff_ns"`
	// Release is the time from telling the peers to close until the last
	// connection was released; PeerClose is how long the peers themselves
	// took to close their ends.
	Release   time.Duration `json:"release_ns"`
	PeerClose time.Duration `json:"peer_close_ns"`
	// ReleaseCPU is the CPU time this process spent releasing them.
	ReleaseCPU time.Duration `json:"release_cpu_ns"`
	FDsBefore  int           `json:"fds_before"`
	FDsHeld    int           `json:"fds_held"`
	FDsAfter   int           `json:"fds_after"`
	PeerClosed uint64        `json:"peer_closed"`
}

type heldFlags struct {
	n, peers, srcs int
}

func (h *heldFlags) register(fs *flag.FlagSet, n int) {
	fs.IntVar(&h.n, "n", n, "connections lingering at once")
	fs.IntVar(&h.peers, "peers", 2, "child processes holding the peers' ends")
	fs.IntVar(&h.srcs, "srcs", 8, "loopback source addresses the peers use")
}

// runHeld runs "held-server" once per mode, each in a fresh process so that
// one mode's garbage does not count against the next.
func runHeld(ctx context.Context, self []string, f heldFlags, modes []string) ([]HeldResult, error) {
	var res []HeldResult
	for _, m := range modes {
		c, err := startChild(ctx, self, "held-server", "-mode", m,
			"-n", strconv.Itoa(f.n), "-peers", strconv.Itoa(f.peers), "-srcs", strconv.Itoa(f.srcs))
		if err != nil {
			return res, err
		}
		out, err := c.expect("result ")
		werr := c.stop()
		if err != nil {
			return res, fmt.Errorf("held %s: %v (%v)", m, err, werr)
		}
		var r HeldResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return res, err
		}
		res = append(res, r)
	}
	return res, nil
}

// runHeldServer measures one mode: "loop" (the Linux event loop), "portable"
// (a goroutine per socket on the runtime's poller), or "naive" (CloseWrite,
// then a goroutine per socket in io.Copy(io.Discard, conn)).
func runHeldServer(ctx context.Context, self []string, args []string) error {
	fs := flag.NewFlagSet("held-server", flag.ContinueOnError)
	mode := fs.String("mode", "loop", "loop, portable or naive")
	var f heldFlags
	f.register(fs, 1000)
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := heldServer(ctx, self, *mode, f)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(r)
	fmt.Printf("result %s\n", b)
	return nil
}

func heldServer(ctx context.Context, self []string, mode string, f heldFlags) (r HeldResult, err error) {
	r = HeldResult{Mode: mode, N: f.n}
	var released atomic.Int64
	allReleased := make(chan struct{})
	onRelease := func() {
		if released.Add(1) == int64(f.n) {
			close(allReleased)
		}
	}
	var lc *linger.Closer
	switch mode {
	case "loop", "portable":
		// Bounds wide enough that nothing ends before the peers close.
		cfg := linger.Config{
			MaxConns: f.n,
			// All of them come from a few source addresses.
			MaxConnsPerIP: -1,
			IdleTimeout:   time.Hour,
			MaxHold:       time.Hour,
			OnClose:       func(linger.Report) { onRelease() },
		}
		if mode == "portable" {
			lc, err = newPortable(cfg)
		} else {
			lc, err = linger.New(cfg)
		}
		if err != nil {
			return r, err
		}
	case "naive":
	default:
		return r, fmt.Errorf("unknown mode %q", mode)
	}

	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return r, err
	}
	defer ln.Close()

	before := measureMem()
	slab0 := readSlabs()
	r.FDsBefore = proc.OpenFDs()
	g0 := runtime.NumGoroutine()

	// Accept and hand off everything the peers open.
	var naive sync.WaitGroup
	accepted := make(chan error, 1)
	t0 := time.Now()
	go func() {
		for i := 0; i < f.n; i++ {
			c, err := ln.AcceptTCP()
			if err != nil {
				accepted <- err
				return
			}
			if lc != nil {
				lc.Close(c)
				continue
			}
			// What a Go server would write without linger: half-close,
			// then read and discard until the peer closes.
			c.CloseWrite()
			naive.Add(1)
			go func() {
				defer naive.Done()
				io.Copy(io.Discard, c)
				c.Close()
				onRelease()
			}()
		}
		accepted <- nil
	}()

	var peers []*child
	defer func() {
		for _, p := range peers {
			p.stop()
		}
	}()
	per := (f.n + f.peers - 1) / f.peers
	for left := f.n; left > 0; left -= per {
		k := min(per, left)
		p, err := startChild(ctx, self, "peer", "-addr", ln.Addr().String(),
			"-n", strconv.Itoa(k), "-src", srcAddrs(f.srcs))
		if err != nil {
			return r, err
		}
		peers = append(peers, p)
	}
	for _, p := range peers {
		if _, err := p.expect("ready"); err != nil {
			return r, fmt.Errorf("peer: %w", err)
		}
	}
	select {
	case err := <-accepted:
		if err != nil {
			return r, err
		}
	case <-ctx.Done():
		return r, ctx.Err()
	}
	// Wait until every connection is lingering (the naive goroutines are
	// parked in Read as soon as they start).
	for lc != nil && lc.Stats().Lingering < f.n {
		time.Sleep(time.Millisecond)
	}
	r.Handoff = time.Since(t0)
	time.Sleep(100 * time.Millisecond)

	held := measureMem()
	r.SlabCaches, r.SlabPerConn = slabDelta(slab0, readSlabs(), float64(f.n))
	r.FDsHeld = proc.OpenFDs()
	r.Goroutines = runtime.NumGoroutine() - g0
	n := float64(f.n)
	r.HeapPerConn = (float64(held.Heap) - float64(before.Heap)) / n
	r.StackPerConn = (float64(held.Stacks) - float64(before.Stacks)) / n
	r.GoPerConn = r.HeapPerConn + r.StackPerConn
	r.RSSPerConn = (float64(held.RSS) - float64(before.RSS)) / n

	// All peers close at once.
	cpu0 := proc.CPUTime()
	t1 := time.Now()
	for _, p := range peers {
		if err := p.send("close"); err != nil {
			return r, err
		}
	}
	for _, p := range peers {
		s, err := p.expect("closed ")
		if err != nil {
			return r, err
		}
		ns, _ := strconv.ParseInt(s, 10, 64)
		r.PeerClose = max(r.PeerClose, time.Duration(ns))
	}
	select {
	case <-allReleased:
	case <-time.After(60 * time.Second):
		return r, errors.New("not all connections were released within 60s of their peers closing")
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.Release = time.Since(t1)
	r.ReleaseCPU = proc.CPUTime() - cpu0
	naive.Wait()
	if lc != nil {
		if err := lc.Shutdown(ctx); err != nil {
			return r, err
		}
		r.PeerClosed = lc.Stats().Outcomes[linger.PeerClosed]
	} else {
		r.PeerClosed = uint64(released.Load())
	}
	for _, p := range peers {
		p.stop()
	}
	peers = nil
	r.FDsAfter = proc.OpenFDs()
	return r, nil
}
