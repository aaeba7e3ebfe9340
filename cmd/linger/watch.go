package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/linger-go/linger/internal/netns"
	"github.com/linger-go/linger/internal/watch"
)

// runWatch is the flag layer of "linger watch"; package internal/watch does
// the work. Exit status: 0 no lost last word, 1 some, 2 the command line was
// wrong, 3 the watch could not start (not root, no such interface, not
// Linux).
func runWatch(ctx context.Context, args []string) error {
	return watchMain(ctx, args, os.Stdout, os.Stderr)
}

func watchMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	portList := fs.String("port", "", "comma-separated local server `ports` to watch, such as 443,8443 (default: every port this host accepts connections on)")
	iface := fs.String("interface", "any", "network `device` to watch, or any")
	interval := fs.Duration("interval", 10*time.Second, "how often to print the counts of the last interval")
	asJSON := fs.Bool("json", false, "print one JSON object a line, each interval and at the end, instead of tables")
	duration := fs.Duration("duration", 0, "stop after this long and print the summary (default: until interrupted)")
	metrics := fs.String("metrics", "", "serve the counters in the Prometheus text format at http://`ADDR`/metrics")
	maxFlows := fs.Int("max-flows", watch.DefaultMaxFlows, "connections the flow table holds at most; open ones pushed out are counted")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: linger watch [flags]\n\n"+
			"Counts, per local server port, the connections whose server reset them after its\n"+
			"last bytes while the peer was still sending (the lost last word), split into after a\n"+
			"TLS alert, after other data, and without any data; beside them the kernel's\n"+
			"TCPAbortOnClose and TCPAbortOnData. Passive: a packet socket with a kernel filter\n"+
			"reads the host's own traffic. Linux, as root or with CAP_NET_RAW.\n"+
			"\nExit status:\n"+
			"  0  no lost last word\n"+
			"  1  some lost last words\n"+
			"  2  the command line is wrong\n"+
			"  3  the watch could not start (not root, no such interface, not Linux)\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("watch", fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	ports, err := parsePorts(*portList)
	if err != nil {
		return usageErr("watch", err)
	}
	switch {
	case *interval <= 0:
		return usageErr("watch", fmt.Errorf("interval %v: want a positive duration", *interval))
	case *duration < 0:
		return usageErr("watch", fmt.Errorf("negative duration %v", *duration))
	case *maxFlows <= 0:
		return usageErr("watch", fmt.Errorf("max-flows %d: want at least 1", *maxFlows))
	}
	w, err := watch.Start(watch.Config{Interface: *iface, Ports: ports, MaxFlows: *maxFlows})
	if err != nil {
		fmt.Fprintf(stderr, "linger watch: %v\n", err)
		return exitError(3)
	}
	kernel0, kerr := netns.ReadCounters()
	if kerr != nil {
		fmt.Fprintf(stderr, "linger watch: the kernel's counters: %v (not shown)\n", kerr)
	}
	if *metrics != "" {
		ln, err := net.Listen("tcp", *metrics)
		if err != nil {
			w.Close()
			fmt.Fprintf(stderr, "linger watch: --metrics: %v\n", err)
			return exitError(3)
		}
		srv := &http.Server{Handler: metricsHandler(w, kernel0, kerr == nil), ReadHeaderTimeout: 5 * time.Second}
		served := make(chan struct{})
		go func() {
			defer close(served)
			srv.Serve(ln)
		}()
		defer func() {
			srv.Close()
			<-served
		}()
	}
	out := &watchOutput{w: stdout, json: *asJSON, live: !*asJSON && stdoutIsTerminal(stdout), given: ports}
	listenWarn := map[uint16]bool{} // ports last reported as not listened on
	checkListening := func() {
		if len(ports) == 0 {
			return
		}
		ls, err := watch.Listening()
		if err != nil {
			return
		}
		for _, p := range ports {
			switch {
			case !ls[p] && !listenWarn[p]:
				fmt.Fprintf(stderr, "linger watch: nothing listens on port %d (still watching it)\n", p)
			case ls[p] && listenWarn[p]:
				fmt.Fprintf(stderr, "linger watch: port %d is listened on now\n", p)
			}
			listenWarn[p] = !ls[p]
		}
	}
	checkListening()

	start := time.Now()
	var end <-chan time.Time
	if *duration > 0 {
		t := time.NewTimer(*duration)
		defer t.Stop()
		end = t.C
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	prev, prevKernel, prevAt := watch.Snapshot{}, kernel0, start
	report := func(final bool) (watch.Snapshot, error) {
		snap, err := w.Snapshot()
		kernel, kerr2 := netns.ReadCounters()
		now := time.Now()
		if final {
			out.write(now, now.Sub(start), snap, watch.Snapshot{}, kernel.Sub(kernel0), kerr == nil && kerr2 == nil, true)
		} else {
			out.write(now, now.Sub(prevAt), snap, prev, kernel.Sub(prevKernel), kerr == nil && kerr2 == nil, false)
			prev, prevKernel, prevAt = snap, kernel, now
		}
		return snap, err
	}
	for {
		select {
		case <-tick.C:
			if _, err := report(false); err != nil {
				w.Close()
				return err
			}
			checkListening()
			continue
		case <-end:
		case <-ctx.Done():
		}
		break
	}
	snap, err := report(true)
	if _, cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	var total watch.Counts
	for _, c := range snap.Ports {
		total = total.Add(c)
	}
	if total.Lost > 0 {
		return exitError(1)
	}
	return nil
}

// parsePorts reads "443,8443".
func parsePorts(s string) ([]uint16, error) {
	if s == "" {
		return nil, nil
	}
	var ports []uint16
	for _, f := range strings.Split(s, ",") {
		p, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("port %q: want a number from 1 to 65535", f)
		}
		if !slices.Contains(ports, uint16(p)) {
			ports = append(ports, uint16(p))
		}
	}
	if len(ports) > 100 {
		return nil, fmt.Errorf("%d ports: at most 100", len(ports))
	}
	return ports, nil
}

// watchOutput prints each interval and the summary.
type watchOutput struct {
	w io.Writer
	// json prints JSON lines; live, on a terminal, redraws one table in
	// place instead of printing one after another.
	json, live bool
	// given are the ports of --port, shown even when quiet.
	given []uint16
}

// portLine is one port's counts in a JSON line.
type portLine struct {
	Port uint16 `json:"port"`
	watch.Counts
}

// watchLine is a JSON line.
type watchLine struct {
	Type    string       `json:"type"` // "interval" or "summary"
	Time    time.Time    `json:"time"`
	Seconds float64      `json:"seconds"`
	Ports   []portLine   `json:"ports"`
	Total   watch.Counts `json:"total"`
	// Kernel holds the kernel's counters' growth over the same time, for
	// the whole network namespace (every port, every process).
	Kernel *kernelLine `json:"kernel,omitempty"`
	// Packets, Drops and Evicted grew over the same time; Flows is the
	// flow table's size now.
	Packets uint64 `json:"packets"`
	Drops   uint64 `json:"drops"`
	Flows   int    `json:"flows"`
	Evicted uint64 `json:"evicted"`
}

type kernelLine struct {
	AbortOnClose uint64 `json:"tcp_abort_on_close"`
	AbortOnData  uint64 `json:"tcp_abort_on_data"`
	OutRsts      uint64 `json:"tcp_out_rsts"`
}

func (o *watchOutput) write(now time.Time, d time.Duration, snap, prev watch.Snapshot, kernel netns.Counters, kernelOK, final bool) {
	line := watchLine{Type: "interval", Time: now.UTC().Truncate(time.Millisecond), Seconds: d.Round(time.Millisecond).Seconds(),
		Packets: snap.Packets - prev.Packets, Drops: snap.Drops - prev.Drops, Flows: snap.Flows, Evicted: snap.Evicted - prev.Evicted}
	if final {
		line.Type = "summary"
	}
	if kernelOK {
		line.Kernel = &kernelLine{AbortOnClose: kernel.AbortOnClose, AbortOnData: kernel.AbortOnData, OutRsts: kernel.OutRsts}
	}
	for port, c := range snap.Ports {
		c = c.Sub(prev.Ports[port])
		if c == (watch.Counts{}) && !slices.Contains(o.given, port) {
			continue
		}
		line.Ports = append(line.Ports, portLine{port, c})
		line.Total = line.Total.Add(c)
	}
	slices.SortFunc(line.Ports, func(a, b portLine) int { return int(a.Port) - int(b.Port) })
	if o.json {
		b, _ := json.Marshal(line)
		fmt.Fprintf(o.w, "%s\n", b)
		return
	}
	if o.live && !final {
		fmt.Fprint(o.w, "\x1b[H\x1b[2J") // home, clear: one table, redrawn
	}
	what := fmt.Sprintf("the last %v", d.Round(time.Second))
	if final {
		what = fmt.Sprintf("summary of %v", d.Round(time.Second))
	}
	fmt.Fprintf(o.w, "linger watch, %s, %s\n", now.Format("15:04:05"), what)
	tw := tabwriter.NewWriter(o.w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "port\topened\tserver closed\tlost\tafter alert\tafter data\twithout data\treset after FIN\tclosing resets\tpeer resets\tuntracked resets\t")
	for _, p := range line.Ports {
		c := p.Counts
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", p.Port, c.Opened, c.ServerClosed, c.Lost,
			c.LostAlert, c.LostData, c.LostNone, c.LostAfterFIN, c.ClosingResets, c.PeerResets, c.Untracked)
	}
	if len(line.Ports) == 0 {
		fmt.Fprintln(tw, "-\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t")
	}
	tw.Flush()
	if line.Kernel != nil {
		fmt.Fprintf(o.w, "kernel (whole host): TCPAbortOnClose +%d, TCPAbortOnData +%d, RSTs sent +%d\n",
			line.Kernel.AbortOnClose, line.Kernel.AbortOnData, line.Kernel.OutRsts)
	}
	fmt.Fprintf(o.w, "capture: %d packets read, %d dropped by the kernel, %d flows held, %d open flows evicted\n",
		line.Packets, line.Drops, line.Flows, line.Evicted)
	if final {
		t := line.Total
		fmt.Fprintf(o.w, "%d lost last words (%d after a TLS alert, %d after other data, %d without data) in %d connections seen opening\n",
			t.Lost, t.LostAlert, t.LostData, t.LostNone, t.Opened)
		if line.Drops > 0 || line.Evicted > 0 {
			fmt.Fprintln(o.w, "counts may be low: the kernel dropped packets or the flow table was full (raise --max-flows)")
		}
	}
}

// metricsHandler serves the counters since the start in the Prometheus
// text format, written by hand: the root module stays free of the
// Prometheus client.
func metricsHandler(w *watch.Watcher, kernel0 netns.Counters, kernelOK bool) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(rw, r)
			return
		}
		snap, err := w.Snapshot()
		if err != nil {
			http.Error(rw, err.Error(), http.StatusInternalServerError)
			return
		}
		rw.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeMetrics(rw, snap, kernel0, kernelOK)
	})
}

func writeMetrics(out io.Writer, snap watch.Snapshot, kernel0 netns.Counters, kernelOK bool) {
	ports := make([]uint16, 0, len(snap.Ports))
	for p := range snap.Ports {
		ports = append(ports, p)
	}
	slices.Sort(ports)
	family := func(name, help string, value func(watch.Counts) uint64) {
		fmt.Fprintf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
		for _, p := range ports {
			fmt.Fprintf(out, "%s{port=\"%d\"} %d\n", name, p, value(snap.Ports[p]))
		}
	}
	family("linger_watch_opened_total", "Connections seen opening (the server's SYN-ACK).", func(c watch.Counts) uint64 { return c.Opened })
	family("linger_watch_server_closed_total", "Connections whose server sent FIN or RST before the peer.", func(c watch.Counts) uint64 { return c.ServerClosed })
	fmt.Fprint(out, "# HELP linger_watch_lost_total Connections the server reset after its last bytes while the peer was still sending, by those bytes.\n# TYPE linger_watch_lost_total counter\n")
	for _, p := range ports {
		c := snap.Ports[p]
		for _, kv := range []struct {
			after string
			n     uint64
		}{{"alert", c.LostAlert}, {"data", c.LostData}, {"nothing", c.LostNone}} {
			fmt.Fprintf(out, "linger_watch_lost_total{port=\"%d\",after=\"%s\"} %d\n", p, kv.after, kv.n)
		}
	}
	family("linger_watch_lost_after_fin_total", "Lost last words whose reset came after the server's FIN.", func(c watch.Counts) uint64 { return c.LostAfterFIN })
	family("linger_watch_closing_resets_total", "Server resets that answered the peer's own close_notify: not lost.", func(c watch.Counts) uint64 { return c.ClosingResets })
	family("linger_watch_peer_resets_total", "Connections the peer reset first.", func(c watch.Counts) uint64 { return c.PeerResets })
	family("linger_watch_untracked_resets_total", "Server resets on connections not seen from their start.", func(c watch.Counts) uint64 { return c.Untracked })
	single := func(name, typ, help string, v uint64) {
		fmt.Fprintf(out, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", name, help, name, typ, name, v)
	}
	single("linger_watch_packets_total", "counter", "Packets the kernel filter passed to the watcher.", snap.Packets)
	single("linger_watch_drops_total", "counter", "Packets the kernel dropped because the watcher's socket was full.", snap.Drops)
	single("linger_watch_flows", "gauge", "Connections the flow table holds.", uint64(snap.Flows))
	single("linger_watch_evicted_total", "counter", "Open connections pushed out of the full flow table.", snap.Evicted)
	if kernelOK {
		if k, err := netns.ReadCounters(); err == nil {
			d := k.Sub(kernel0)
			single("linger_watch_kernel_abort_on_close_total", "counter", "TcpExtTCPAbortOnClose since the watch began, whole host.", d.AbortOnClose)
			single("linger_watch_kernel_abort_on_data_total", "counter", "TcpExtTCPAbortOnData since the watch began, whole host.", d.AbortOnData)
		}
	}
}

// stdoutIsTerminal reports whether w is a terminal, for the live table.
func stdoutIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f)
}
