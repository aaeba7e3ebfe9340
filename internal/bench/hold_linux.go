//go:build linux

package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/backendsel"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/quantile"
)

// HoldResult is one mode's run of "hold": how long a connection stays after
// its peer, having read our last word, closed.
type HoldResult struct {
	Mode    string        `json:"mode"`
	N       int           `json:"n"`
	At      int           `json:"at_once"`
	Matched int           `json:"matched"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
	Max     time.Duration `json:"max_ns"`
	// PeerClosed counts connections that ended because their peer closed,
	// Other those that ended any other way (nothing else should happen).
	PeerClosed int `json:"peer_closed"`
	Other      int `json:"other"`
	Failed     int `json:"peer_failures"`
	// CPU is this (server) process's CPU time per connection, from the
	// peers' start to their end: accepting, writing our last word, and
	// closing the connection, plainly, through linger or with a goroutine
	// of its own. The peers run in another process, as a server's clients
	// do, so their wake-ups do not share the server's scheduler. The same
	// in every mode, it also counts starting that process and reading its
	// line per connection (about 1 µs a connection), which brings the
	// modes' ratio a little closer to 1.
	CPU time.Duration `json:"server_cpu_per_conn_ns"`
}

var portableMu sync.Mutex

// newPortable returns a Closer on the portable backend.
func newPortable(cfg linger.Config) (*linger.Closer, error) {
	portableMu.Lock()
	defer portableMu.Unlock()
	backendsel.Portable.Store(true)
	defer backendsel.Portable.Store(false)
	return linger.New(cfg)
}

// holdTime runs n connections, c at a time, through one mode: "loop",
// "portable", or "naive" (CloseWrite, io.Copy(io.Discard), Close).
func holdTime(ctx context.Context, self []string, mode string, n, c, srcs int) (HoldResult, error) {
	r := HoldResult{Mode: mode, N: n, At: c}
	var mu sync.Mutex
	// Loopback reuses ports in TIME_WAIT (net.ipv4.tcp_tw_reuse=2), so
	// one address may stand for several connections in turn: keep every
	// time and pair them in order.
	released := make(map[string][]int64, n)
	var lc *linger.Closer
	var err error
	cfg := linger.Config{OnClose: func(rep linger.Report) {
		t := monoNow()
		mu.Lock()
		defer mu.Unlock()
		if rep.RemoteAddr != nil {
			a := rep.RemoteAddr.String()
			released[a] = append(released[a], t)
		}
		if rep.Outcome == linger.PeerClosed {
			r.PeerClosed++
		} else {
			r.Other++
		}
	}}
	switch mode {
	case "loop":
		lc, err = linger.New(cfg)
	case "portable":
		lc, err = newPortable(cfg)
	case "naive":
	default:
		return r, fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		return r, err
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return r, err
	}
	var handlers sync.WaitGroup
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			conn, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			// Our last word, then close without reading the request.
			conn.Write([]byte(alertMsg))
			if lc != nil {
				lc.Close(conn)
				continue
			}
			conn.CloseWrite()
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				io.Copy(io.Discard, conn)
				conn.Close()
				t := monoNow()
				mu.Lock()
				a := conn.RemoteAddr().String()
				released[a] = append(released[a], t)
				r.PeerClosed++
				mu.Unlock()
			}()
		}
	}()
	cpu0 := proc.CPUTime()
	p, err := startChild(ctx, self, "holdpeer", "-addr", ln.Addr().String(),
		"-n", strconv.Itoa(n), "-c", strconv.Itoa(c), "-src", srcAddrs(srcs))
	if err != nil {
		ln.Close()
		return r, err
	}
	fins := make(map[string][]int64, n)
	for {
		l, err := p.line()
		if err != nil {
			p.stop()
			ln.Close()
			return r, err
		}
		if rest, ok := strings.CutPrefix(l, "done "); ok {
			r.Failed, _ = strconv.Atoi(rest)
			break
		}
		if f := strings.Fields(l); len(f) == 3 && f[0] == "fin" {
			t, _ := strconv.ParseInt(f[2], 10, 64)
			fins[f[1]] = append(fins[f[1]], t)
		}
	}
	p.stop()
	ln.Close()
	<-acceptDone
	handlers.Wait()
	r.CPU = (proc.CPUTime() - cpu0) / time.Duration(max(n, 1))
	if lc != nil {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		lc.Shutdown(sctx)
		cancel()
	}
	mu.Lock()
	defer mu.Unlock()
	var holds []time.Duration
	for a, ts := range fins {
		rts := released[a]
		slices.Sort(ts)
		slices.Sort(rts)
		for i := range min(len(ts), len(rts)) {
			holds = append(holds, time.Duration(rts[i]-ts[i]))
		}
	}
	r.Matched = len(holds)
	if len(holds) > 0 {
		slices.Sort(holds)
		r.P50 = quantile.NearestRank(holds, 0.50)
		r.P99 = quantile.NearestRank(holds, 0.99)
		r.Max = holds[len(holds)-1]
	}
	return r, nil
}
