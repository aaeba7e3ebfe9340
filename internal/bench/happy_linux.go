//go:build linux

package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/quantile"
	"golang.org/x/sys/unix"
)

// HappyResult is one round of "happy": a real load generator against
// net/http's ServeTLS on loopback, with or without linger's Listener, so
// that every connection the server closes lingers.
type HappyResult struct {
	Client string `json:"client"` // wrk-keepalive, wrk-close or h2load
	Mode   string `json:"mode"`   // plain or linger
	Round  int    `json:"round"`
	// Slot is the measurement's place in its round: 0 to 3, in the order
	// plain, linger, linger, plain.
	Slot      int           `json:"slot"`
	Requests  int64         `json:"requests"`
	Errors    int64         `json:"errors"` // failed requests, non-2xx answers and socket errors
	PerSec    float64       `json:"requests_per_s"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	ServerCPU time.Duration `json:"server_cpu_ns"`
	// Wall is how long the load generator ran, ClientCPU the CPU time it
	// used: a single-threaded generator near Wall is the bottleneck, not
	// the server.
	Wall      time.Duration `json:"wall_ns"`
	ClientCPU time.Duration `json:"client_cpu_ns"`
	// Pinned says whether the server and the load generator ran on
	// separate CPUs (-happy-pin).
	Pinned bool `json:"pinned,omitempty"`
	// Outcomes counts how the server's connections ended (linger only);
	// Lingering is how many still lingered when the client was done.
	Outcomes  map[string]uint64 `json:"outcomes,omitempty"`
	Lingering int               `json:"lingering"`
	FDsBefore int               `json:"fds_before"`
	FDsAfter  int               `json:"fds_after"`
}

type happyFlags struct {
	d       time.Duration // per measurement
	conns   int
	rounds  int // each: plain, linger, linger, plain
	clients []string
	pin     bool // the load generator on the last CPU, the server on the others
}

// happyClients are the load generators "happy" knows, each as the Debian
// package's command line for a URL and a duration.
var happyClients = map[string]func(url string, f happyFlags, logFile string) []string{
	"wrk-keepalive": func(url string, f happyFlags, _ string) []string {
		return []string{"wrk", "-t1", "-c" + strconv.Itoa(f.conns), "-d" + secs(f.d), "--latency", url}
	},
	"wrk-close": func(url string, f happyFlags, _ string) []string {
		return []string{"wrk", "-t1", "-c" + strconv.Itoa(f.conns), "-d" + secs(f.d), "--latency", "-H", "Connection: close", url}
	},
	"h2load": func(url string, f happyFlags, logFile string) []string {
		return []string{"h2load", "-t1", "-c" + strconv.Itoa(f.conns), "-m4", "-D" + secs(f.d), "--log-file=" + logFile, url}
	},
}

// register adds the flags of "happy" to fs.
func (f *happyFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.d, "happy-d", 2*time.Second, "happy: measured time of each measurement (whole seconds)")
	fs.IntVar(&f.conns, "happy-c", 16, "happy: connections the load generator keeps open")
	fs.IntVar(&f.rounds, "happy-rounds", 4, "happy: rounds for each client, each plain, linger, linger, plain (two pairs)")
	fs.BoolVar(&f.pin, "happy-pin", false, "happy: run the load generator on the last CPU and the server on the others (both modes alike)")
	f.clients = []string{"wrk-keepalive", "wrk-close", "h2load"}
	fs.Func("happy-clients", "happy: load generators, from wrk-keepalive, wrk-close, h2load (default all three)", func(v string) error {
		f.clients = strings.Split(v, ",")
		return nil
	})
}

// smoke makes "happy" take a few seconds, for CI.
func (f *happyFlags) smoke() { f.d, f.conns, f.rounds = time.Second, 4, 1 }

func secs(d time.Duration) string {
	return strconv.Itoa(max(int(d.Round(time.Second)/time.Second), 1)) + "s"
}

// happyOrder is the order of the modes within a round: each mode runs
// once first and once last, so that a load that grows or shrinks during
// the round (the shared machine's other work) weighs on both alike, and
// the two adjacent pairs each give a ratio.
var happyOrder = [...]string{"plain", "linger", "linger", "plain"}

// happy runs every client of f against a plain and a lingering server,
// round by round in happyOrder, each measurement on a fresh server. A
// client whose program is not installed is skipped, and said so in
// skipped.
func happy(ctx context.Context, f happyFlags) (rs []HappyResult, skipped []string, err error) {
	pki, err := pki.NewPKI()
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "linger-happy-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	var clients []string
	for _, name := range f.clients {
		args, ok := happyClients[name]
		if !ok {
			return nil, nil, fmt.Errorf("unknown happy client %q (known: wrk-keepalive, wrk-close, h2load)", name)
		}
		if _, err := exec.LookPath(args("", f, "")[0]); err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v (Debian packages wrk and nghttp2-client)", name, err))
			continue
		}
		clients = append(clients, name)
	}
	var clientCPU string
	if f.pin && len(clients) > 0 {
		server, client, err := happyCPUs()
		if err != nil {
			return nil, skipped, err
		}
		restore, err := pinProcess(server)
		if err != nil {
			return nil, skipped, err
		}
		defer restore()
		clientCPU = strconv.Itoa(client)
	}
	for round := 1; round <= f.rounds; round++ {
		for _, name := range clients {
			for slot, mode := range happyOrder {
				r, err := happyRound(ctx, f, pki, name, mode, clientCPU, filepath.Join(dir, "h2load.log"))
				if err != nil {
					return rs, skipped, fmt.Errorf("happy %s %s: %w", name, mode, err)
				}
				r.Round, r.Slot = round, slot
				rs = append(rs, r)
			}
		}
	}
	return rs, skipped, nil
}

// happyCPUs splits the CPUs this process may run on: the last for the
// load generator, the others for the server.
func happyCPUs() (server unix.CPUSet, client int, err error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return server, 0, os.NewSyscallError("sched_getaffinity", err)
	}
	var cpus []int
	for i := range len(all) * 64 {
		if all.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return server, 0, fmt.Errorf("-happy-pin needs 2 CPUs, this process may use %d", len(cpus))
	}
	for _, c := range cpus[:len(cpus)-1] {
		server.Set(c)
	}
	return server, cpus[len(cpus)-1], nil
}

// pinProcess restricts every thread of this process to set, and returns
// a function that gives each thread back the mask it had. The mask is
// per thread: the runtime's threads that exist now are set one by one,
// and those it starts later inherit the mask of the thread that creates
// them.
func pinProcess(set unix.CPUSet) (restore func(), err error) {
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, os.NewSyscallError("sched_getaffinity", err)
	}
	setAll := func(set *unix.CPUSet) error {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			// A thread may have exited since the listing: ESRCH is no
			// failure.
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return os.NewSyscallError("sched_setaffinity", err)
			}
		}
		return nil
	}
	if err := setAll(&set); err != nil {
		setAll(&old)
		return nil, err
	}
	return func() { setAll(&old) }, nil
}

// happyBody is what every request gets: a small page.
var happyBody = []byte(strings.Repeat("linger happy path\n", 64))

// startHappyServer serves happyBody with net/http's ServeTLS on addr,
// through a Closer's Listener if mode is "linger" (lc is then that
// Closer). done receives what ServeTLS returns.
func startHappyServer(pki *pki.PKI, mode, addr string) (srv *http.Server, ln *net.TCPListener, lc *linger.Closer, done chan error, err error) {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if ln, err = net.ListenTCP("tcp", a); err != nil {
		return nil, nil, nil, nil, err
	}
	var served net.Listener = ln
	if mode == "linger" {
		if lc, err = linger.New(linger.Config{}); err != nil {
			ln.Close()
			return nil, nil, nil, nil, err
		}
		served = lc.Listener(ln)
	}
	srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			io.Copy(io.Discard, req.Body)
			w.Header().Set("Content-Type", "text/plain")
			w.Write(happyBody)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pki.Server}},
		// Load generators end their last connections abruptly: the
		// handshake errors that net/http logs are expected.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done = make(chan error, 1)
	go func() { done <- srv.ServeTLS(served, "", "") }()
	return srv, ln, lc, done, nil
}

// runHappyServer is the hidden "linger bench happyserver": the happy
// path's server alone, in a process of its own, so that perf can count
// what the server does and nothing else (perf_happy.sh). It prints its
// URL and process id on one line, serves until its stdin closes, and then
// prints how its connections ended.
func runHappyServer(args []string) error {
	fs := flag.NewFlagSet("happyserver", flag.ContinueOnError)
	mode := fs.String("mode", "plain", "plain or linger")
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *mode != "plain" && *mode != "linger" {
		return usageError("happyserver -mode %q: want plain or linger", *mode)
	}
	pki, err := pki.NewPKI()
	if err != nil {
		return err
	}
	srv, ln, lc, done, err := startHappyServer(pki, *mode, *addr)
	if err != nil {
		return err
	}
	fmt.Printf("https://%s/ %d\n", ln.Addr(), os.Getpid())
	io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	<-done
	if lc == nil {
		fmt.Println("outcomes: plain")
		return nil
	}
	st := lc.Stats()
	err = lc.Shutdown(ctx)
	var outcomes []string
	for o, n := range st.Outcomes {
		if n > 0 {
			outcomes = append(outcomes, fmt.Sprintf("%s=%d", o, n))
		}
	}
	slices.Sort(outcomes)
	fmt.Printf("outcomes: %s\n", strings.Join(outcomes, " "))
	return err
}

// happyRound measures one client against one fresh server. With clientCPU
// set, the load generator runs on that CPU (taskset).
func happyRound(ctx context.Context, f happyFlags, pki *pki.PKI, client, mode, clientCPU, logFile string) (HappyResult, error) {
	r := HappyResult{Client: client, Mode: mode, Pinned: clientCPU != "", FDsBefore: proc.OpenFDs()}
	srv, ln, lc, done, err := startHappyServer(pki, mode, "127.0.0.1:0")
	if err != nil {
		return r, err
	}

	url := "https://" + ln.Addr().String() + "/"
	os.Remove(logFile)
	args := happyClients[client](url, f, logFile)
	if clientCPU != "" {
		args = append([]string{"taskset", "-c", clientCPU}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cpu0, t0 := proc.CPUTime(), time.Now()
	out, runErr := cmd.CombinedOutput()
	r.ServerCPU, r.Wall = proc.CPUTime()-cpu0, time.Since(t0)
	if ps := cmd.ProcessState; ps != nil {
		r.ClientCPU = ps.UserTime() + ps.SystemTime()
	}

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	<-done
	if lc != nil {
		st := lc.Stats()
		r.Lingering = st.Lingering
		if err := lc.Shutdown(sctx); err != nil {
			return r, err
		}
		r.Outcomes = map[string]uint64{}
		for o, n := range st.Outcomes {
			if n > 0 {
				r.Outcomes[o.String()] = n
			}
		}
	}
	// A connection's goroutine may still be closing its socket when
	// Shutdown returns: net/http waits 500 ms (rstAvoidanceDelay) before
	// it closes a connection whose request body it did not read to the
	// end. A "Connection: close" request read whole is closed at once,
	// right after its response, while the client is still reading it.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r.FDsAfter = proc.OpenFDs(); r.FDsAfter <= r.FDsBefore || time.Now().After(deadline) {
			break
		}
	}
	if runErr != nil {
		return r, fmt.Errorf("%s: %w: %s", args[0], runErr, lastLines(out, 5))
	}
	if client == "h2load" {
		err = parseH2load(&r, out, logFile)
	} else {
		err = parseWrk(&r, out)
	}
	if err != nil {
		return r, fmt.Errorf("%w in the output of %s:\n%s", err, strings.Join(args, " "), lastLines(out, 20))
	}
	return r, nil
}

func lastLines(b []byte, n int) string {
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(ls[max(len(ls)-n, 0):], "\n")
}

// parseWrk reads wrk's summary: the requests and errors, requests/s, and the
// latency distribution that --latency prints.
func parseWrk(r *HappyResult, out []byte) error {
	var seen int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[0] == "50%":
			r.P50, _ = parseWrkDuration(f[1])
			seen++
		case len(f) >= 2 && f[0] == "99%":
			r.P99, _ = parseWrkDuration(f[1])
			seen++
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			r.Requests, _ = strconv.ParseInt(f[0], 10, 64)
			seen++
		case len(f) >= 2 && f[0] == "Requests/sec:":
			r.PerSec, _ = strconv.ParseFloat(f[1], 64)
			seen++
		case len(f) >= 3 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.Errors += n
			}
		case len(f) >= 5 && f[0] == "Non-2xx":
			n, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
			r.Errors += n
		}
	}
	if seen < 4 {
		return errors.New("no wrk summary")
	}
	return nil
}

// ParseWrk reads wrk --latency's summary into a HappyResult's Requests,
// Errors, PerSec, P50 and P99, for the measurements that run wrk against
// servers other than happy's (internal/preloadlab's preloaded nginx).
func ParseWrk(out []byte) (HappyResult, error) {
	var r HappyResult
	err := parseWrk(&r, out)
	return r, err
}

// parseWrkDuration parses wrk's 1.23ms, 456.78us, 2.00s.
func parseWrkDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   float64
	}{{"us", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(f * u.unit), nil
		}
	}
	return 0, fmt.Errorf("bad duration %q", s)
}

// parseH2load reads h2load's summary for requests/s and failures, and its
// per-request log for the latency percentiles it does not print.
func parseH2load(r *HappyResult, out []byte, logFile string) error {
	var seen int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		f := strings.Fields(l)
		switch {
		case strings.HasPrefix(l, "finished in") && len(f) >= 5:
			// finished in 5.00s, 12345.67 req/s, 1.23MB/s
			r.PerSec, _ = strconv.ParseFloat(f[3], 64)
			seen++
		case strings.HasPrefix(l, "requests:") && len(f) >= 12:
			// requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout
			r.Requests, _ = strconv.ParseInt(f[7], 10, 64)
			failed, _ := strconv.ParseInt(f[9], 10, 64)
			errored, _ := strconv.ParseInt(f[11], 10, 64)
			r.Errors += failed + errored
			seen++
		case strings.HasPrefix(l, "status codes:"):
			// status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx
			for i := 2; i+1 < len(f); i += 2 {
				if strings.TrimSuffix(f[i+1], ",") != "2xx" {
					n, _ := strconv.ParseInt(f[i], 10, 64)
					r.Errors += n
				}
			}
		}
	}
	if seen < 2 {
		return errors.New("no h2load summary")
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		return err
	}
	var lat []time.Duration
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, "\t")
		if len(f) < 3 {
			continue
		}
		us, err := strconv.ParseInt(f[2], 10, 64)
		if err == nil && f[1] != "-1" {
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
	}
	if len(lat) == 0 {
		return errors.New("empty h2load log")
	}
	slices.Sort(lat)
	r.P50, r.P99 = quantile.NearestRank(lat, 0.50), quantile.NearestRank(lat, 0.99)
	return nil
}

// happyStats is what the rounds of one client give: linger/plain of each
// pair of adjacent measurements, and plain's own figures.
type happyStats struct {
	Client string
	// Linger/plain, one per pair: requests/s, p99 latency and server CPU
	// per request.
	PerSec, P99, CPU []float64
	// Plain's requests/s and p99 in nanoseconds, one per pair.
	PlainPerSec, PlainP99 []float64
	// ClientBusy is the largest share of its wall time that the load
	// generator spent on a CPU in any measurement: near 1 for wrk -t1
	// means the generator, not the server, set the pace.
	ClientBusy float64
	// ServerBusy is the largest share of the machine's CPUs the server
	// used.
	ServerBusy float64
}

// happyRatios pairs each client's measurements round by round: the first
// two of a round and the last two, each a plain and a linger measurement
// taken back to back, so that a ratio compares measurements a few
// seconds apart. Clients come in the order of rs.
func happyRatios(rs []HappyResult, cpus int) []happyStats {
	type key struct {
		client string
		round  int
	}
	groups := map[key][]HappyResult{}
	var keys []key
	var stats []happyStats
	idx := map[string]int{}
	for _, r := range rs {
		k := key{r.Client, r.Round}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
		if _, ok := idx[r.Client]; !ok {
			idx[r.Client] = len(stats)
			stats = append(stats, happyStats{Client: r.Client})
		}
		st := &stats[idx[r.Client]]
		if r.Wall > 0 {
			st.ClientBusy = max(st.ClientBusy, float64(r.ClientCPU)/float64(r.Wall))
			st.ServerBusy = max(st.ServerBusy, float64(r.ServerCPU)/float64(r.Wall)/float64(max(cpus, 1)))
		}
	}
	for _, k := range keys {
		g := groups[k]
		slices.SortStableFunc(g, func(a, b HappyResult) int { return a.Slot - b.Slot })
		st := &stats[idx[k.client]]
		for i := 0; i+1 < len(g); i += 2 {
			p, l := g[i], g[i+1]
			if p.Mode == "linger" {
				p, l = l, p
			}
			if p.Mode != "plain" || l.Mode != "linger" || p.PerSec <= 0 || p.P99 <= 0 {
				continue
			}
			st.PerSec = append(st.PerSec, l.PerSec/p.PerSec)
			st.P99 = append(st.P99, float64(l.P99)/float64(p.P99))
			if pc, lc := cpuPerRequest(p), cpuPerRequest(l); pc > 0 {
				st.CPU = append(st.CPU, lc/pc)
			}
			st.PlainPerSec = append(st.PlainPerSec, p.PerSec)
			st.PlainP99 = append(st.PlainP99, float64(p.P99))
		}
	}
	return stats
}

// cpuPerRequest is the server's CPU time per request, in microseconds.
func cpuPerRequest(r HappyResult) float64 {
	return float64(r.ServerCPU.Microseconds()) / float64(max(r.Requests, 1))
}

func printHappy(w io.Writer, rs []HappyResult, skipped []string) {
	for _, s := range skipped {
		fmt.Fprintf(w, "happy: skipped %s\n", s)
	}
	if len(rs) == 0 {
		return
	}
	pinned := ""
	if rs[0].Pinned {
		pinned = "; load generator and server on separate CPUs"
	}
	fmt.Fprintf(w, "happy: real load generators against net/http ServeTLS on loopback, plain and through linger.Listener; each round plain, linger, linger, plain%s\n", pinned)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "client\tround\tserver\trequests\terrors\treq/s\tp50\tp99\tserver CPU µs/req\tclient CPU/wall\tlingering at end\tfds before/after\toutcomes\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%.0f\t%.2f ms\t%.2f ms\t%.1f\t%.2f\t%d\t%d/%d\t%v\t\n", r.Client, r.Round, r.Mode, r.Requests, r.Errors,
			r.PerSec, float64(r.P50)/1e6, float64(r.P99)/1e6, cpuPerRequest(r), float64(r.ClientCPU)/float64(max(r.Wall, 1)),
			r.Lingering, r.FDsBefore, r.FDsAfter, r.Outcomes)
	}
	tw.Flush()
	// Ratios within each pair, where plain and linger ran back to back,
	// and their median: a shared machine's load swings more between
	// rounds than within one.
	for _, st := range happyRatios(rs, runtime.NumCPU()) {
		fmt.Fprintf(w, "  %s, linger/plain, median (least–greatest) of %d pairs: requests/s %s; p99 %s; server CPU per request %s\n",
			st.Client, len(st.PerSec), spread(st.PerSec), spread(st.P99), spread(st.CPU))
		fmt.Fprintf(w, "    per pair: requests/s %s; p99 %s\n", fmtRatios(st.PerSec), fmtRatios(st.P99))
		note := ""
		if st.ClientBusy > 0.9 {
			note = ": the load generator, not the server, may set the pace"
		}
		fmt.Fprintf(w, "    plain: %.0f requests/s, p99 %.2f ms (medians); busiest measurement: load generator %.0f %% of a CPU, server %.0f %% of %d CPUs%s\n",
			spread(st.PlainPerSec).Median, spread(st.PlainP99).Median/1e6, 100*st.ClientBusy, 100*st.ServerBusy, runtime.NumCPU(), note)
	}
	fmt.Fprintln(w)
}

func fmtRatios(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(s, " ")
}
