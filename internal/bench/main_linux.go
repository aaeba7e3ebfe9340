//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/linger-go/linger/internal/bytesize"
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
          through linger.Listener: requests/s, p50/p99, server CPU
  all     all of the above

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
		}
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	smoke := fs.Bool("smoke", false, "tiny sizes, a few seconds in all: for CI")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	cpuProfile := fs.String("cpuprofile", "", "write this process's CPU profile to this file")
	var held heldFlags
	held.register(fs, 15000)
	modes := fs.String("modes", "loop,portable,naive", "held and hold: modes to run")
	holdN := fs.Int("hold-n", 5000, "hold: connections in all")
	holdC := fs.Int("hold-c", 16, "hold: connections at once")
	var fl floodFlags
	fs.DurationVar(&fl.d, "d", 10*time.Second, "flood: measured time per round")
	fs.DurationVar(&fl.warm, "warm", time.Second, "flood: warm-up before each round")
	fs.IntVar(&fl.workers, "workers", 64, "flood: client connections at once")
	fs.IntVar(&fl.procs, "procs", 2, "flood: client processes")
	fs.IntVar(&fl.cap, "cap", 32, "flood: Config.MaxConns (the cap on lingering sockets)")
	rounds := fs.Int("rounds", 2, "flood: rounds of plain then linger")
	floodModes := fs.String("flood-modes", "plain,linger", "flood: server modes of each round, in order: plain, linger, linger-nopressure (PressureDiscard off), linger-pdSIZE (PressureDiscard SIZE, e.g. linger-pd64k)")
	var pf pinFlags
	fs.IntVar(&pf.n, "pin-n", 4608, "pin: attacking connections")
	fs.IntVar(&pf.resp, "pin-resp", 1<<20, "pin: response bytes the server tries to write to each")
	fs.DurationVar(&pf.write, "pin-write", 300*time.Millisecond, "pin: the server's write timeout")
	// The kernel doubles SO_SNDBUF: 64 KiB lets about 100 KiB queue per
	// socket, so 4,608 sockets stay below tcp_mem's pressure threshold,
	// which is global: autotuning would queue the whole 1 MiB on each,
	// 4.6 GB, and starve every other TCP user of the machine.
	fs.IntVar(&pf.sndbuf, "pin-sndbuf", 64<<10, "pin: the server's SO_SNDBUF (0: the kernel's autotuning)")
	fs.DurationVar(&pf.d, "pin-d", 40*time.Second, "pin: how long to watch each mode (past MaxHold)")
	fs.IntVar(&pf.perIP, "pin-perip", 256, "pin: MaxConnsPerIP in the linger-perip mode")
	pinModes := fs.String("pin-modes", "plain,linger,linger-noperip", "pin: modes to run: plain, linger (the defaults), linger-perip (MaxConnsPerIP -pin-perip), linger-noperip (no per-IP cap)")
	kinds := fs.String("clients", "upload-1k,upload-1m,cooperative,deaf",
		"flood: client kinds: upload-SIZE (write SIZE bytes, e.g. 1k or 1m, then read), cooperative (write flat out while reading, stop at the alert), deaf (write flat out, never read)")
	var hf happyFlags
	hf.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return ErrUsage // the flag package has printed the problem and the usage
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError("say what to measure: held, hold, flood, pin, happy or all")
	}
	if err := checkFlags([]intFlag{
		{"n", held.n, 1}, {"peers", held.peers, 1}, {"srcs", held.srcs, 1},
		{"hold-n", *holdN, 1}, {"hold-c", *holdC, 1},
		{"workers", fl.workers, 1}, {"procs", fl.procs, 1}, {"cap", fl.cap, 1}, {"rounds", *rounds, 1},
	}, []durFlag{{"d", fl.d, false}, {"warm", fl.warm, true}}); err != nil {
		return err
	}
	what := fs.Arg(0)
	switch what {
	case "held", "hold", "flood", "pin", "happy", "all":
	default:
		fs.Usage()
		return usageError("unknown benchmark %q: held, hold, flood, pin, happy or all", what)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
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
	if *smoke {
		held.n, held.peers = 400, 2
		*holdN, *holdC = 400, 8
		fl.d, fl.warm, fl.workers, *rounds = 500*time.Millisecond, 200*time.Millisecond, 8, 1
		fl.cap = 4
		pf.n, pf.d, pf.maxHold, pf.perIP = 200, 4*time.Second, 2*time.Second, 16
		*pinModes = "plain,linger,linger-perip"
		hf.smoke()
	}
	fl.srcs = held.srcs
	ms, err := listFlag("modes", *modes, "loop", "portable", "naive")
	if err != nil {
		return err
	}
	pms, err := listFlag("pin-modes", *pinModes, "plain", "linger", "linger-perip", "linger-noperip")
	if err != nil {
		return err
	}
	// Read -clients before any benchmark runs, so that a mistyped one fails
	// at once and not after the others have run for minutes.
	floods, err := floodClients(*kinds, fl)
	if err != nil {
		return err
	}

	out := os.Stdout
	res := map[string]any{"machine": machine()}
	printMachine(out, res["machine"].(Machine))
	// Invariants every run must keep, whatever the numbers: a smoke run
	// fails on them.
	var problems []string
	run := func(name string) bool { return what == name || what == "all" }
	known := false
	if run("held") {
		known = true
		r, err := runHeld(ctx, self, held, ms)
		res["held"] = r
		printHeld(out, r)
		if err != nil {
			return err
		}
		for _, h := range r {
			if h.FDsAfter != h.FDsBefore {
				problems = append(problems, fmt.Sprintf("held %s: %d descriptors at the end, %d before", h.Mode, h.FDsAfter, h.FDsBefore))
			}
			if int(h.PeerClosed) != h.N {
				problems = append(problems, fmt.Sprintf("held %s: %d of %d ended because the peer closed", h.Mode, h.PeerClosed, h.N))
			}
		}
	}
	if run("hold") {
		known = true
		var rs []HoldResult
		for _, m := range ms {
			r, err := holdTime(ctx, self, m, *holdN, *holdC, held.srcs)
			if err != nil {
				return fmt.Errorf("hold %s: %w", m, err)
			}
			rs = append(rs, r)
		}
		res["hold"] = rs
		printHold(out, rs)
		for _, h := range rs {
			if h.Other > 0 || h.Matched < h.N*9/10 {
				problems = append(problems, fmt.Sprintf("hold %s: %d of %d matched, %d ended other than by the peer closing", h.Mode, h.Matched, h.N, h.Other))
			}
		}
	}
	if run("flood") {
		known = true
		ca, files, cleanup, err := writePKI()
		if err != nil {
			return err
		}
		defer cleanup()
		var rs []FloodResult
		for _, f := range floods {
			for range *rounds {
				for _, m := range strings.Split(*floodModes, ",") {
					r, err := flood(ctx, self, m, f, ca, files)
					if err != nil {
						return fmt.Errorf("flood %s %s: %w", f.name, m, err)
					}
					rs = append(rs, r)
				}
			}
		}
		res["flood"] = rs
		printFlood(out, rs)
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
	}
	if run("pin") {
		known = true
		var rs []PinResult
		for _, m := range pms {
			r, err := pin(ctx, m, pf)
			if err != nil {
				return fmt.Errorf("pin %s: %w", m, err)
			}
			rs = append(rs, r)
		}
		res["pin"] = rs
		printPin(out, pf, rs)
		for _, r := range rs {
			if r.Freed == 0 {
				problems = append(problems, fmt.Sprintf("pin %s: the server still held sockets at the end", r.Mode))
			}
			if r.PerIP > 0 && r.Lingering > r.PerIP {
				problems = append(problems, fmt.Sprintf("pin %s: %d lingering from one address, above MaxConnsPerIP %d", r.Mode, r.Lingering, r.PerIP))
			}
		}
	}
	if run("happy") {
		known = true
		if err := runHappy(ctx, out, hf, res, &problems); err != nil {
			return err
		}
	}
	if !known {
		return usageError("unknown benchmark %q", what) // unreachable: checked above
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// Machine identifies where the numbers were taken.
type Machine struct {
	CPUs   int    `json:"cpus"`
	Model  string `json:"cpu_model"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Load   string `json:"loadavg"`
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
	fmt.Fprintln(tw, "mode\tconns\tmatched\tp50\tp99\tmax\tpeer_closed\tother\tpeer failures\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f µs\t%.0f µs\t%.0f µs\t%d\t%d\t%d\t\n", r.Mode, r.N, r.Matched,
			float64(r.P50)/1e3, float64(r.P99)/1e3, float64(r.Max)/1e3, r.PeerClosed, r.Other, r.Failed)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func printFlood(w io.Writer, rs []FloodResult) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "flood: TLS 1.3, untrusted client certificates, clients keep sending; %d client connections at once\n", rs[0].Workers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tserver\trejected/s\tserver CPU µs/reject\tclient KiB sent/hs\tclient alerts/resets/other\tmax lingering (cap)\theap live first→last third (max)\tstacks max\tfds before/max/after\tgoroutines left\toutcomes\t")
	type key struct{ kind, mode string }
	rate, cpu := map[key]float64{}, map[key]float64{}
	var kinds []string
	for _, r := range rs {
		k := key{r.Clients, r.Mode}
		if _, ok := rate[key{r.Clients, "plain"}]; !ok && r.Mode == "plain" {
			kinds = append(kinds, r.Clients)
		}
		rate[k] += r.PerSec
		cpuPer := float64(r.CPU.Microseconds()) / float64(max(r.Rejected, 1))
		cpu[k] += cpuPer
		capS := "-"
		if r.Mode != "plain" {
			capS = fmt.Sprintf("%d (%d)", r.MaxLingering, r.Cap)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%d/%d/%d\t%s\t%.1f→%.1f MiB (%.1f)\t%.0f KiB\t%d/%d/%d\t%d\t%v\t\n",
			r.Clients, r.Mode, r.PerSec, cpuPer, float64(r.Client.Sent)/1024/float64(max(r.Client.Handshakes, 1)),
			r.Client.Alerts, r.Client.Resets, r.Client.Other, capS,
			mib(r.HeapLiveFirst), mib(r.HeapLiveLast), mib(r.HeapLiveMax), float64(r.StacksMax)/1024,
			r.FDsBefore, r.FDsMax, r.FDsAfter, r.GoroutinesLeft, r.Outcomes)
	}
	tw.Flush()
	for _, kind := range kinds {
		p := key{kind, "plain"}
		var modes []string
		for _, r := range rs {
			if r.Clients == kind && r.Mode != "plain" && !slices.Contains(modes, r.Mode) {
				modes = append(modes, r.Mode)
			}
		}
		for _, m := range modes {
			l := key{kind, m}
			fmt.Fprintf(w, "  %s clients: %s/plain rejected handshakes per second = %.3f; server CPU per rejected handshake %s/plain = %.3f\n",
				kind, m, rate[l]/rate[p], m, cpu[l]/cpu[p])
		}
	}
	fmt.Fprintln(w)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// floodClients reads -clients: one floodFlags for each kind of client in
// the comma-separated list, based on fl.
func floodClients(list string, fl floodFlags) ([]floodFlags, error) {
	var fs []floodFlags
	for _, kind := range strings.Split(list, ",") {
		f := fl
		f.name, f.kind = kind, kind
		if size, ok := strings.CutPrefix(kind, "upload-"); ok {
			f.kind = kindUpload
			n, err := bytesize.Parse(size)
			if err != nil {
				return nil, usageError("-clients %s: %v", kind, err)
			}
			f.body = int(n)
		}
		if !knownKind(f.kind) {
			return nil, usageError("-clients: unknown client kind %q: want upload-SIZE, %s or %s", kind, kindCooperative, kindDeaf)
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// listFlag splits a comma-separated flag value and checks each item against
// known, so that a mistyped mode fails before any benchmark runs.
func listFlag(name, list string, known ...string) ([]string, error) {
	items := strings.Split(list, ",")
	for _, it := range items {
		if !slices.Contains(known, it) {
			return nil, usageError("-%s: unknown mode %q: want %s", name, it, strings.Join(known, ", "))
		}
	}
	return items, nil
}
