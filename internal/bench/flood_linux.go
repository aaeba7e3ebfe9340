//go:build linux

package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/bytesize"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/proc"
)

// FloodResult is one round of "flood" with one server close strategy.
type FloodResult struct {
	Mode     string        `json:"mode"`    // "plain", "linger", "linger-nopressure" or "linger-pdSIZE"
	Clients  string        `json:"clients"` // upload, cooperative or deaf
	Duration time.Duration `json:"duration_ns"`
	Workers  int           `json:"workers"`
	Cap      int           `json:"cap"`
	// Rejected counts handshakes the server failed within the window.
	Rejected int64   `json:"rejected"`
	PerSec   float64 `json:"rejected_per_sec"`
	// CPU is this (server) process's CPU time within the window.
	CPU time.Duration `json:"server_cpu_ns"`
	// Samples taken every 50 ms within the window.
	MaxLingering   int               `json:"max_lingering"`
	HeapLiveFirst  uint64            `json:"heap_live_first_third"` // median, bytes
	HeapLiveLast   uint64            `json:"heap_live_last_third"`
	HeapLiveMax    uint64            `json:"heap_live_max"`
	StacksMax      uint64            `json:"stacks_max"`
	GoroutinesMax  int               `json:"goroutines_max"`
	FDsBefore      int               `json:"fds_before"`
	FDsMax         int               `json:"fds_max"`
	FDsAfter       int               `json:"fds_after"`
	GoroutinesLeft int               `json:"goroutines_left"`
	Outcomes       map[string]uint64 `json:"outcomes,omitempty"`
	Client         floodCounts       `json:"client_counts"`
}

type floodFlags struct {
	d, warm        time.Duration
	workers, procs int
	cap, srcs      int
	name, kind     string // name: kind with its body size, as in -clients
	body           int
}

// flood runs one round: clients in child processes handshake with an
// untrusted certificate and keep sending for f.warm+f.d; the server counts
// the handshakes it rejects within the last f.d and closes each connection
// plainly or through linger, capped at f.cap lingering at once.
func flood(ctx context.Context, self []string, mode string, f floodFlags, ca *pki.PKI, files pki.Files) (FloodResult, error) {
	r := FloodResult{Mode: mode, Clients: f.name, Duration: f.d, Workers: f.workers, Cap: f.cap}
	runtime.GC()
	r.FDsBefore = proc.OpenFDs()
	tcpLn, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return r, err
	}
	var ln net.Listener = tcpLn
	var lc *linger.Closer
	if strings.HasPrefix(mode, "linger") {
		cfg := linger.Config{MaxConns: f.cap}
		switch pd, ok := strings.CutPrefix(mode, "linger-pd"); {
		case mode == "linger-nopressure":
			cfg.PressureDiscard = -1 // MaxDiscard whatever the pressure
		case ok:
			n, err := bytesize.Parse(pd)
			if err != nil {
				tcpLn.Close()
				return r, fmt.Errorf("mode %s: %w", mode, err)
			}
			cfg.PressureDiscard = int64(n)
		}
		if lc, err = linger.New(cfg); err != nil {
			tcpLn.Close()
			return r, err
		}
		ln = lc.Listener(ln)
	}
	g0 := runtime.NumGoroutine()
	cfg := ca.ServerConfig(tls.VersionTLS13)

	var counting atomic.Bool
	var rejected atomic.Int64
	var handlers sync.WaitGroup
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				err := tls.Server(conn, cfg).Handshake()
				if err != nil && counting.Load() {
					rejected.Add(1)
				}
				// As net/http after a handshake error: close the raw
				// connection, which lingers if it came through lc.
				conn.Close()
			}()
		}
	}()

	var clients []*child
	stopClients := func() {
		for _, c := range clients {
			c.stop()
		}
		clients = nil
	}
	defer stopClients()
	run := f.warm + f.d + 500*time.Millisecond
	for i := range f.procs {
		args := []string{"floodclient", "-addr", tcpLn.Addr().String(), "-d", run.String(),
			"-workers", strconv.Itoa(max(1, f.workers/f.procs)), "-src", srcAddrsFrom(i*f.srcs, f.srcs),
			"-ca", files.CA, "-cert", files.UntrustedCert, "-key", files.UntrustedKey,
			"-kind", f.kind, "-body", strconv.Itoa(f.body)}
		c, err := startChild(ctx, self, args...)
		if err != nil {
			return r, err
		}
		clients = append(clients, c)
	}

	select {
	case <-time.After(f.warm):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	counting.Store(true)
	cpu0 := proc.CPUTime()
	t0 := time.Now()
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	var live []uint64
	tick := time.NewTicker(50 * time.Millisecond)
	for time.Since(t0) < f.d {
		select {
		case <-tick.C:
		case <-ctx.Done():
			tick.Stop()
			return r, ctx.Err()
		}
		metrics.Read(samples)
		live = append(live, samples[0].Value.Uint64())
		r.HeapLiveMax = max(r.HeapLiveMax, samples[0].Value.Uint64())
		r.StacksMax = max(r.StacksMax, samples[1].Value.Uint64())
		r.GoroutinesMax = max(r.GoroutinesMax, runtime.NumGoroutine()-g0)
		r.FDsMax = max(r.FDsMax, proc.OpenFDs())
		if lc != nil {
			r.MaxLingering = max(r.MaxLingering, lc.Stats().Lingering)
		}
	}
	tick.Stop()
	counting.Store(false)
	el := time.Since(t0)
	r.CPU = proc.CPUTime() - cpu0
	r.Rejected = rejected.Load()
	r.PerSec = float64(r.Rejected) / el.Seconds()
	third := max(1, len(live)/3)
	r.HeapLiveFirst = median(live[:third])
	r.HeapLiveLast = median(live[len(live)-third:])

	for _, c := range clients {
		out, err := c.expect("counts ")
		if err != nil {
			return r, err
		}
		var k floodCounts
		if err := json.Unmarshal([]byte(out), &k); err != nil {
			return r, err
		}
		r.Client.add(k)
	}
	stopClients()
	tcpLn.Close()
	<-acceptDone
	handlers.Wait()
	if lc != nil {
		sctx, cancel := context.WithTimeout(ctx, 35*time.Second)
		err := lc.Shutdown(sctx)
		cancel()
		if err != nil {
			return r, err
		}
		r.Outcomes = map[string]uint64{}
		for o, n := range lc.Stats().Outcomes {
			if n > 0 {
				r.Outcomes[o.String()] = n
			}
		}
	}
	// Goroutines that are exiting may take a moment to be gone.
	for i := 0; i < 100 && runtime.NumGoroutine() > g0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	r.GoroutinesLeft = runtime.NumGoroutine() - g0
	r.FDsAfter = proc.OpenFDs()
	return r, nil
}

func (k *floodCounts) add(o floodCounts) {
	k.Dials += o.Dials
	k.Handshakes += o.Handshakes
	k.Alerts += o.Alerts
	k.Resets += o.Resets
	k.Other += o.Other
	k.Sent += o.Sent
	if k.Errors == nil {
		k.Errors = map[string]int64{}
	}
	for e, n := range o.Errors {
		k.Errors[e] += n
	}
}

func median(v []uint64) uint64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// writePKI writes ca to a new temporary directory for the clients.
func writePKI() (*pki.PKI, pki.Files, func(), error) {
	ca, err := pki.NewPKI()
	if err != nil {
		return nil, pki.Files{}, nil, err
	}
	dir, err := os.MkdirTemp("", "linger-bench-")
	if err != nil {
		return nil, pki.Files{}, nil, err
	}
	files, err := ca.WriteFiles(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, pki.Files{}, nil, err
	}
	return ca, files, func() { os.RemoveAll(dir) }, nil
}
