//go:build linux

package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/bytesize"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/pressuresel"
	"github.com/linger-go/linger/internal/proc"
)

// FloodResult is one round of "flood" with one server close strategy.
type FloodResult struct {
	Mode     string        `json:"mode"`    // "plain", "linger", "linger-nopressure", "linger-pdSIZE", "linger-norb", "linger-rbSIZE", "linger-nohold", "linger-rball" or "linger-noinq"
	Clients  string        `json:"clients"` // upload, cooperative or deaf
	Round    int           `json:"round"`   // from 1
	Duration time.Duration `json:"duration_ns"`
	Workers  int           `json:"workers"`
	Procs    int           `json:"client_procs"`
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
	r := FloodResult{Mode: mode, Clients: f.name, Duration: f.d, Workers: f.procs * max(1, f.workers/f.procs), Procs: f.procs, Cap: f.cap}
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
		pd, isPD := strings.CutPrefix(mode, "linger-pd")
		rb, isRB := strings.CutPrefix(mode, "linger-rb")
		switch {
		case mode == "linger-nopressure":
			cfg.PressureDiscard = -1 // MaxDiscard whatever the pressure
		case mode == "linger-norb":
			pressuresel.RcvBuf.Store(-1)
		case mode == "linger-nohold":
			pressuresel.NoHold.Store(true)
		case mode == "linger-rball":
			pressuresel.RcvBufAlways.Store(true)
		case mode == "linger-noinq":
			pressuresel.NoInq.Store(true)
		case isPD, isRB:
			size := pd
			if isRB {
				size = rb
			}
			n, err := bytesize.Parse(size)
			if err != nil {
				tcpLn.Close()
				return r, fmt.Errorf("mode %s: %w", mode, err)
			}
			if isPD {
				cfg.PressureDiscard = int64(n)
			} else {
				pressuresel.RcvBuf.Store(int64(n))
			}
		}
		lc, err = linger.New(cfg)
		pressuresel.RcvBuf.Store(0)
		pressuresel.NoHold.Store(false)
		pressuresel.RcvBufAlways.Store(false)
		pressuresel.NoInq.Store(false)
		if err != nil {
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
	// The window is set in CLOCK_MONOTONIC, which the clients read too: they
	// count what they dial within it, and we what we reject within it.
	from := monoNow() + int64(f.warm)
	to := from + int64(f.d)
	for i := range f.procs {
		args := []string{"floodclient", "-addr", tcpLn.Addr().String(),
			"-from", strconv.FormatInt(from, 10), "-to", strconv.FormatInt(to, 10),
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
	case <-time.After(time.Duration(from - monoNow())):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	counting.Store(true)
	cpu0 := proc.CPUTime()
	t0 := time.Now()
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	var live []uint64
	tick := time.NewTicker(50 * time.Millisecond)
	for monoNow() < to {
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

// FloodRatio compares one server mode with the baseline (the first of
// -flood-modes, plain by default) round by round: each round runs the
// modes back to back, so the ratio of two of its measurements cancels the
// machine's slow drift, which on a shared machine swings a mode's own rate
// by 2x from round to round. Load that changes within seconds still shows
// in the range.
type FloodRatio struct {
	Clients  string `json:"clients"`
	Mode     string `json:"mode"`
	Baseline string `json:"baseline"`
	Rounds   int    `json:"rounds"`
	// Rejected handshakes per second, mode/baseline, one per round.
	Rate Spread `json:"rejected_per_sec_ratio"`
	// Server CPU per rejected handshake, mode/baseline, one per round.
	CPU Spread `json:"cpu_per_reject_ratio"`
	// Counts summed over the rounds, mode then baseline.
	Rejected [2]int64 `json:"rejected"`
	Alerts   [2]int64 `json:"client_alerts"`
	Shakes   [2]int64 `json:"client_handshakes"`
}

// Spread is the median of a few ratios with their range.
type Spread struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	All    []float64 `json:"all"` // in round order
}

// String prints a ratio's spread: "1.012 (0.95–1.07)".
func (s Spread) String() string { return fmt.Sprintf("%.3f (%.2f–%.2f)", s.Median, s.Min, s.Max) }

// spread is the median of v, its least and its greatest.
func spread(v []float64) Spread {
	s := Spread{All: v}
	if len(v) == 0 {
		return s
	}
	sorted := slices.Sorted(slices.Values(v))
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	// The median of an even count is the mean of the middle two: with as
	// few as 4 rounds, the nearest rank would lean to one side.
	if n := len(sorted); n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return s
}

// benchFlood runs o.floodRounds rounds for each kind of client. A round
// runs every mode once; the order reverses every other round (ABBA), so
// that a drift in the machine's load favours neither mode. It returns the
// rounds, each with its number, from which floodRatios pairs them again.
func benchFlood(ctx context.Context, self []string, o *options, w io.Writer) (any, []string, error) {
	ca, files, cleanup, err := writePKI()
	if err != nil {
		return nil, nil, err
	}
	defer cleanup()
	var rs []FloodResult
	for _, f := range o.floods {
		for i := range o.floodRounds {
			modes := slices.Clone(o.floodModes)
			if i%2 == 1 {
				slices.Reverse(modes)
			}
			for _, m := range modes {
				r, err := flood(ctx, self, m, f, ca, files)
				if err != nil {
					return rs, nil, fmt.Errorf("flood %s %s round %d: %w", f.name, m, i+1, err)
				}
				r.Round = i + 1
				rs = append(rs, r)
			}
		}
	}
	printFlood(w, rs, floodRatios(rs, o.floodModes[0]))
	var problems []string
	for _, f := range rs {
		if f.MaxLingering > f.Cap {
			problems = append(problems, fmt.Sprintf("flood %s %s: %d lingering at once, above the cap of %d", f.Clients, f.Mode, f.MaxLingering, f.Cap))
		}
		if f.FDsAfter != f.FDsBefore || f.GoroutinesLeft > 0 {
			problems = append(problems, fmt.Sprintf("flood %s %s: %d descriptors at the end (%d before), %d goroutines left",
				f.Clients, f.Mode, f.FDsAfter, f.FDsBefore, f.GoroutinesLeft))
		}
		if f.Rejected == 0 {
			problems = append(problems, fmt.Sprintf("flood %s %s: no handshake rejected", f.Clients, f.Mode))
		}
	}
	return rs, problems, nil
}

// floodRatios compares each mode with base, round by round, for each kind
// of client, in the order the rounds ran.
func floodRatios(rs []FloodResult, base string) []FloodRatio {
	type key struct {
		kind, mode string
		round      int
	}
	byKey := map[key]FloodResult{}
	var out []FloodRatio
	idx := map[[2]string]int{}
	for _, r := range rs {
		byKey[key{r.Clients, r.Mode, r.Round}] = r
	}
	for _, r := range rs {
		if r.Mode == base {
			continue
		}
		b, ok := byKey[key{r.Clients, base, r.Round}]
		if !ok || b.Rejected == 0 || r.Rejected == 0 {
			continue
		}
		k := [2]string{r.Clients, r.Mode}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, FloodRatio{Clients: r.Clients, Mode: r.Mode, Baseline: base})
		}
		q := &out[i]
		q.Rounds++
		q.Rate.All = append(q.Rate.All, r.PerSec/b.PerSec)
		q.CPU.All = append(q.CPU.All, cpuPerReject(r)/cpuPerReject(b))
		q.Rejected[0] += r.Rejected
		q.Rejected[1] += b.Rejected
		q.Alerts[0] += r.Client.Alerts
		q.Alerts[1] += b.Client.Alerts
		q.Shakes[0] += r.Client.Handshakes
		q.Shakes[1] += b.Client.Handshakes
	}
	for i := range out {
		out[i].Rate = spread(out[i].Rate.All)
		out[i].CPU = spread(out[i].CPU.All)
	}
	return out
}

func cpuPerReject(r FloodResult) float64 {
	return float64(r.CPU.Microseconds()) / float64(max(r.Rejected, 1))
}

func printFlood(w io.Writer, rs []FloodResult, ratios []FloodRatio) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "flood: TLS 1.3, untrusted client certificates, clients keep sending; %d client connections at once in %d processes; counted over %v per round after a warm-up\n",
		rs[0].Workers, rs[0].Procs, rs[0].Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tround\tserver\trejected\trejected/s\tserver CPU µs/reject\tclient handshakes\tKiB sent/hs\talerts/resets/other\tmax lingering (cap)\theap live first→last third (max)\tstacks max\tfds before/max/after\tgoroutines left\toutcomes\t")
	for _, r := range rs {
		capS := "-"
		if r.Mode != "plain" {
			capS = fmt.Sprintf("%d (%d)", r.MaxLingering, r.Cap)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.0f\t%.0f\t%d\t%.0f\t%d/%d/%d\t%s\t%.1f→%.1f MiB (%.1f)\t%.0f KiB\t%d/%d/%d\t%d\t%v\t\n",
			r.Clients, r.Round, r.Mode, r.Rejected, r.PerSec, cpuPerReject(r), r.Client.Handshakes,
			float64(r.Client.Sent)/1024/float64(max(r.Client.Handshakes, 1)),
			r.Client.Alerts, r.Client.Resets, r.Client.Other, capS,
			mib(r.HeapLiveFirst), mib(r.HeapLiveLast), mib(r.HeapLiveMax), float64(r.StacksMax)/1024,
			r.FDsBefore, r.FDsMax, r.FDsAfter, r.GoroutinesLeft, r.Outcomes)
	}
	tw.Flush()
	fmt.Fprintln(w, "ratios to the baseline, round by round (each round runs the modes back to back, in reverse order every other round): median [min–max]")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tmode/baseline\trounds\trejected/s\tserver CPU per reject\trejected, summed\tclient saw the alert, summed\t")
	for _, q := range ratios {
		fmt.Fprintf(tw, "%s\t%s/%s\t%d\t%.3f [%.3f–%.3f]\t%.3f [%.3f–%.3f]\t%d / %d\t%d of %d / %d of %d\t\n",
			q.Clients, q.Mode, q.Baseline, q.Rounds, q.Rate.Median, q.Rate.Min, q.Rate.Max,
			q.CPU.Median, q.CPU.Min, q.CPU.Max, q.Rejected[0], q.Rejected[1],
			q.Alerts[0], q.Shakes[0], q.Alerts[1], q.Shakes[1])
	}
	tw.Flush()
	for _, q := range ratios {
		fmt.Fprintf(w, "  %s clients: %s/%s rejected handshakes per second = %.3f (median of %d rounds); server CPU per rejected handshake %s/%s = %.3f\n",
			q.Clients, q.Mode, q.Baseline, q.Rate.Median, q.Rounds, q.Mode, q.Baseline, q.CPU.Median)
	}
	fmt.Fprintln(w)
}
