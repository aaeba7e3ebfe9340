//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"
)

const usage = `usage: linger bench [flags] WHAT

WHAT is one of:
  held    N connections lingering at once: memory per connection and the
          time to release them all (event loop, portable backend, naive
          goroutine-per-socket io.Copy)
  hold    time from a cooperating peer's FIN to our release, p50/p99
  flood   TLS 1.3 handshakes rejected per second, plain close vs linger,
          with clients that keep sending
  pin     one IP pinning sockets and send-queue memory with connections
          that never read (4 KiB window) and send a byte a second: peak
          sockets, bytes queued and seconds, plain close vs linger
  happy   the happy path: wrk (HTTP/1.1 keep-alive and Connection: close)
          and h2load (HTTP/2) against net/http ServeTLS, plain vs
          through linger.Listener, each round plain, linger, linger,
          plain: requests/s, p50/p99, server and client CPU
  all     all of the above

Every run ends with a markdown table of the targets it measured: the
figure, its baseline from the same run, the target, met or not (also in
-json, under "summary").

Flags:
`

// Main runs "linger bench". self re-runs this command in a child process:
// the executable and the arguments that lead to Main (e.g. {exe, "bench"}).
func Main(ctx context.Context, self, args []string) error {
	// Hidden subcommands, run by the benchmarks themselves in children.
	if len(args) > 0 {
		switch args[0] {
		case "peer":
			return runPeer(args[1:])
		case "holdpeer":
			return runHoldPeer(args[1:])
		case "floodclient":
			return runFloodClient(args[1:])
		case "held-server":
			return runHeldServer(ctx, self, args[1:])
		case "happyserver":
			return runHappyServer(args[1:])
		}
	}
	o, err := parseOptions(args, os.Stderr)
	if err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	out := os.Stdout
	start := time.Now()
	m := machine()
	res := map[string]any{"machine": m}
	printMachine(out, m)
	var problems []string
	for _, b := range benchmarks {
		if o.what != b.name && o.what != "all" {
			continue
		}
		r, p, err := b.run(ctx, self, o, out)
		res[b.name] = r
		if err != nil {
			return err
		}
		problems = append(problems, p...)
	}
	m.LoadEnd = machine().Load
	res["machine"] = m
	s := newSummary(strings.Join(append([]string{"linger bench"}, args...), " "), o.smokeSized, m, time.Since(start), res)
	printSummary(out, s)
	res["summary"] = s
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// A benchmark is one WHAT of "linger bench". run measures, prints its
// table to w, and returns its result, for the JSON, and the invariants the
// run broke. An invariant holds whatever the numbers (no descriptor left
// behind, the cap kept): a run that breaks one fails, a smoke run in CI
// too.
type benchmark struct {
	name string
	run  func(ctx context.Context, self []string, o *options, w io.Writer) (result any, problems []string, err error)
}

// benchmarks are what "linger bench" measures, in the order "all" runs
// them.
var benchmarks = []benchmark{
	{"held", benchHeld},
	{"hold", benchHold},
	{"flood", benchFlood},
	{"pin", benchPin},
	{"happy", benchHappy},
}

func benchHeld(ctx context.Context, self []string, o *options, w io.Writer) (any, []string, error) {
	rs, err := runHeld(ctx, self, o.held, o.modes)
	printHeld(w, rs)
	if err != nil {
		return rs, nil, err
	}
	var problems []string
	for _, h := range rs {
		if h.FDsAfter != h.FDsBefore {
			problems = append(problems, fmt.Sprintf("held %s: %d descriptors at the end, %d before", h.Mode, h.FDsAfter, h.FDsBefore))
		}
		if int(h.PeerClosed) != h.N {
			problems = append(problems, fmt.Sprintf("held %s: %d of %d ended because the peer closed", h.Mode, h.PeerClosed, h.N))
		}
	}
	return rs, problems, nil
}

func benchHold(ctx context.Context, self []string, o *options, w io.Writer) (any, []string, error) {
	var rs []HoldResult
	for _, m := range o.modes {
		r, err := holdTime(ctx, self, m, o.hold.n, o.hold.c, o.held.srcs)
		if err != nil {
			return rs, nil, fmt.Errorf("hold %s: %w", m, err)
		}
		rs = append(rs, r)
	}
	printHold(w, rs)
	var problems []string
	for _, h := range rs {
		if h.Other > 0 || h.Matched < h.N*9/10 {
			problems = append(problems, fmt.Sprintf("hold %s: %d of %d matched, %d ended other than by the peer closing", h.Mode, h.Matched, h.N, h.Other))
		}
	}
	return rs, problems, nil
}

func benchPin(ctx context.Context, _ []string, o *options, w io.Writer) (any, []string, error) {
	var rs []PinResult
	for _, m := range o.pinModes {
		r, err := pin(ctx, m, o.pin)
		if err != nil {
			return rs, nil, fmt.Errorf("pin %s: %w", m, err)
		}
		rs = append(rs, r)
	}
	printPin(w, o.pin, rs)
	var problems []string
	for _, r := range rs {
		if r.Freed == 0 {
			problems = append(problems, fmt.Sprintf("pin %s: the server still held sockets at the end", r.Mode))
		}
		if r.PerIP > 0 && r.Lingering > r.PerIP {
			problems = append(problems, fmt.Sprintf("pin %s: %d lingering from one address, above MaxConnsPerIP %d", r.Mode, r.Lingering, r.PerIP))
		}
	}
	return rs, problems, nil
}

func benchHappy(ctx context.Context, _ []string, o *options, w io.Writer) (any, []string, error) {
	rs, skipped, err := happy(ctx, o.happy)
	printHappy(w, rs, skipped)
	if err != nil {
		return rs, nil, err
	}
	var problems []string
	for _, r := range rs {
		if r.Requests == 0 || r.Errors > 0 {
			problems = append(problems, fmt.Sprintf("happy %s %s round %d: %d requests, %d errors", r.Client, r.Mode, r.Round, r.Requests, r.Errors))
		}
		if r.FDsAfter > r.FDsBefore {
			problems = append(problems, fmt.Sprintf("happy %s %s round %d: %d descriptors at the end, %d before", r.Client, r.Mode, r.Round, r.FDsAfter, r.FDsBefore))
		}
	}
	return rs, problems, nil
}

// Machine identifies where the numbers were taken.
type Machine struct {
	CPUs   int    `json:"cpus"`
	Model  string `json:"cpu_model"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Load   string `json:"loadavg"` // at the start
	// LoadEnd is the load average when the last benchmark was done.
	LoadEnd string `json:"loadavg_end,omitempty"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.Load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

func printMachine(w io.Writer, m Machine) {
	fmt.Fprintf(w, "machine: %d CPUs, %s, Linux %s, %s, load average %s\n\n", m.CPUs, m.Model, m.Kernel, m.Go, m.Load)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func printHeld(w io.Writer, rs []HeldResult) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "held: %d connections lingering at once; per connection, after a full GC\n", rs[0].N)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\theap B\tstacks B\theap+stacks B\tRSS B\tkernel slab B, both ends\tgoroutines\thand-off\trelease all\t(peers' close)\trelease CPU\tfds before/held/after\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%s\t%s\t%s\t%s\t%d/%d/%d\t\n", r.Mode, r.HeapPerConn, r.StackPerConn,
			r.GoPerConn, r.RSSPerConn, r.SlabPerConn, r.Goroutines, ms(r.Handoff), ms(r.Release), ms(r.PeerClose), ms(r.ReleaseCPU),
			r.FDsBefore, r.FDsHeld, r.FDsAfter)
	}
	for _, r := range rs {
		if r.SlabCaches != nil {
			fmt.Fprintf(w, "  %s kernel slab per connection, both ends: %s\n", r.Mode, fmtSlabs(r.SlabCaches))
		}
	}
	tw.Flush()
	var naive *HeldResult
	for i := range rs {
		if rs[i].Mode == "naive" {
			naive = &rs[i]
		}
	}
	if naive != nil {
		for _, r := range rs {
			if r.Mode != "naive" && r.GoPerConn > 0 {
				fmt.Fprintf(w, "  %s vs naive: %.1fx less Go memory, %.1fx less RSS per connection, release all %.2fx the time\n",
					r.Mode, naive.GoPerConn/r.GoPerConn, naive.RSSPerConn/max(r.RSSPerConn, 1), float64(r.Release)/float64(naive.Release))
			}
		}
	}
	fmt.Fprintln(w)
}

func printHold(w io.Writer, rs []HoldResult) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "hold: peer reads our last word and closes; time from its close to our release\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tconns\tmatched\tp50\tp99\tmax\tserver CPU µs/conn\tpeer_closed\tother\tpeer failures\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f µs\t%.0f µs\t%.0f µs\t%.1f\t%d\t%d\t%d\t\n", r.Mode, r.N, r.Matched,
			float64(r.P50)/1e3, float64(r.P99)/1e3, float64(r.Max)/1e3, float64(r.CPU)/1e3, r.PeerClosed, r.Other, r.Failed)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
