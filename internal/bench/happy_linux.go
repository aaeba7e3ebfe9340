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
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/quantile"
)

// HappyResult is one round of "happy": a real load generator against
// net/http's ServeTLS on loopback, with or without linger's Listener, so
// that every connection the server closes lingers.
type HappyResult struct {
	Client    string        `json:"client"` // wrk-keepalive, wrk-close or h2load
	Mode      string        `json:"mode"`   // plain or linger
	Round     int           `json:"round"`
	Requests  int64         `json:"requests"`
	Errors    int64         `json:"errors"` // failed requests, non-2xx answers and socket errors
	PerSec    float64       `json:"requests_per_s"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	ServerCPU time.Duration `json:"server_cpu_ns"`
	// Outcomes counts how the server's connections ended (linger only);
	// Lingering is how many still lingered when the client was done.
	Outcomes  map[string]uint64 `json:"outcomes,omitempty"`
	Lingering int               `json:"lingering"`
	FDsBefore int               `json:"fds_before"`
	FDsAfter  int               `json:"fds_after"`
}

type happyFlags struct {
	d       time.Duration // per round and client
	conns   int
	rounds  int
	clients []string
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
	fs.DurationVar(&f.d, "happy-d", 5*time.Second, "happy: measured time per round, client and server mode")
	fs.IntVar(&f.conns, "happy-c", 16, "happy: connections the load generator keeps open")
	fs.IntVar(&f.rounds, "happy-rounds", 3, "happy: rounds of plain then linger, for each client")
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

// happy runs every client of f against a plain and a lingering server,
// round by round, the two modes alternating, each on a fresh server. A
// client whose program is not installed is skipped, and said so in skipped.
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
	for round := 1; round <= f.rounds; round++ {
		for _, name := range clients {
			for _, mode := range []string{"plain", "linger"} {
				r, err := happyRound(ctx, f, pki, name, mode, filepath.Join(dir, "h2load.log"))
				if err != nil {
					return rs, skipped, fmt.Errorf("happy %s %s: %w", name, mode, err)
				}
				r.Round = round
				rs = append(rs, r)
			}
		}
	}
	return rs, skipped, nil
}

// happyBody is what every request gets: a small page.
var happyBody = []byte(strings.Repeat("linger happy path\n", 64))

func happyRound(ctx context.Context, f happyFlags, pki *pki.PKI, client, mode, logFile string) (HappyResult, error) {
	r := HappyResult{Client: client, Mode: mode, FDsBefore: proc.OpenFDs()}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return r, err
	}
	var lc *linger.Closer
	var served net.Listener = ln
	if mode == "linger" {
		if lc, err = linger.New(linger.Config{}); err != nil {
			ln.Close()
			return r, err
		}
		served = lc.Listener(ln)
	}
	srv := &http.Server{
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
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(served, "", "") }()

	url := "https://127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/"
	os.Remove(logFile)
	args := happyClients[client](url, f, logFile)
	cpu0 := proc.CPUTime()
	out, runErr := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	r.ServerCPU = proc.CPUTime() - cpu0

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
	// net/http closes a connection that asked for "Connection: close"
	// 500 ms after its response (rstAvoidanceDelay), in the connection's
	// goroutine, which Shutdown does not wait for.
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

func printHappy(w io.Writer, rs []HappyResult, skipped []string) {
	for _, s := range skipped {
		fmt.Fprintf(w, "happy: skipped %s\n", s)
	}
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "happy: real load generators against net/http ServeTLS on loopback, plain and through linger.Listener, rounds interleaved\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "client\tround\tserver\trequests\terrors\treq/s\tp50\tp99\tserver CPU µs/req\tlingering at end\tfds before/after\toutcomes\t")
	type key struct{ client, mode string }
	rate, p99, cpu := map[key][]float64{}, map[key][]float64{}, map[key][]float64{}
	var order []string
	for _, r := range rs {
		k := key{r.Client, r.Mode}
		if !slices.Contains(order, r.Client) {
			order = append(order, r.Client)
		}
		per := float64(r.ServerCPU.Microseconds()) / float64(max(r.Requests, 1))
		rate[k] = append(rate[k], r.PerSec)
		p99[k] = append(p99[k], float64(r.P99))
		cpu[k] = append(cpu[k], per)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%.0f\t%.2f ms\t%.2f ms\t%.1f\t%d\t%d/%d\t%v\t\n", r.Client, r.Round, r.Mode, r.Requests, r.Errors,
			r.PerSec, float64(r.P50)/1e6, float64(r.P99)/1e6, per, r.Lingering, r.FDsBefore, r.FDsAfter, r.Outcomes)
	}
	tw.Flush()
	// Ratios within each round, where plain and linger ran back to back,
	// and their median: a shared machine's load swings more between
	// rounds than within one.
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		if len(v) == 0 {
			return 0
		}
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	for _, c := range order {
		p, l := key{c, "plain"}, key{c, "linger"}
		var rr, pr, cr []float64
		for i := range min(len(rate[p]), len(rate[l])) {
			rr = append(rr, rate[l][i]/rate[p][i])
			pr = append(pr, p99[l][i]/p99[p][i])
			cr = append(cr, cpu[l][i]/cpu[p][i])
		}
		fmt.Fprintf(w, "  %s, linger/plain per round: requests/s %s (median %.3f); p99 %s (median %.3f); server CPU per request %s (median %.3f)\n",
			c, fmtRatios(rr), median(rr), fmtRatios(pr), median(pr), fmtRatios(cr), median(cr))
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
