package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linger-go/linger/internal/netns"
	"github.com/linger-go/linger/internal/pki"
)

// Options select and size a run. The zero value runs the default matrix.
type Options struct {
	// Quick runs few trials, for CI: under 30 s.
	Quick bool
	// Trials per cell; 0 takes the defaults (see defaultTrials).
	Trials int
	// Networks, Scenarios, Clients and Strategies narrow the matrix; nil
	// means all of them. Without root, "netns" is skipped with a note.
	// In the namespaces, nil Scenarios means netnsScenarios, because a
	// lossy path makes every trial slow.
	Networks, Scenarios, Clients, Strategies []string
	// Path is the namespaces' path; nil means DefaultPath.
	Path *netns.PathConfig
	// Parallel, if positive, runs that many trials of every cell at once;
	// 0 lets the lab choose per cell (see cellParallel).
	Parallel int
	// Progress, if set, receives a line per finished cell; Live adds a
	// trial counter redrawn in place (for a terminal).
	Progress io.Writer
	Live     bool
	// Command is recorded in the report.
	Command string
}

// DefaultPath is the lab's impaired path: 20 ms each way (a 40 ms
// round trip) and 5 % loss in each direction.
var DefaultPath = netns.PathConfig{Delay: 20 * time.Millisecond, Loss: 0.05}

// netnsScenarios are the scenarios run in the namespaces unless chosen
// explicitly. Every trial there costs round trips and retransmissions, and
// tls13-1m is the one the path changes: loopback already covers the rest
// (midstream over a lossy path takes some 20 s a trial).
var netnsScenarios = []string{"tls13-1m"}

// quickNetns is --quick's one impaired namespace row, which --check needs:
// the Go client uploading 1 MiB, immediate close against linger.
var quickNetns = struct{ clients, strategies []string }{[]string{"go-tls"}, []string{"close", "linger"}}

// defaultTrials sizes the default run to under 3 minutes on 2 cores (and
// --quick to under 30 s). The scenarios whose loopback numbers are the
// headline (tls13-1m, http413) get 100 trials; tls13-1k and tls12, where
// most clients get the alert anyway, fewer; midstream trials take a second
// each, and the namespaces' trials round trips and retransmissions.
func defaultTrials(o *Options, network, scenario string) int {
	if o.Trials > 0 {
		return o.Trials
	}
	switch {
	case o.Quick:
		return 10
	case network == "netns", scenario == "midstream", scenario == "tls12":
		return 40
	case scenario == "tls13-1k":
		return 50
	default:
		return 100
	}
}

// cellParallel chooses how many trials of a cell run at once. On loopback
// the outcome is a race between the server's close and the client's
// writes, decided by CPU scheduling on a machine of 2 cores, so trials run
// one at a time; only where the outcome is settled by a timer (net/http's
// 500 ms sleep, the slow reader) do several overlap. In the namespaces the
// path's delay and retransmissions set the pace and the forwarder has CPU
// to spare.
func cellParallel(o *Options, nw *network, scenario, strategy string) int {
	if o.Parallel > 0 {
		return o.Parallel
	}
	if nw.id == "netns" || scenario == "midstream" || strategy == "sleep" {
		return nw.parallel
	}
	return 1
}

// Run runs the matrix and returns its report. On ctx's end it stops, removes
// everything it made and returns ctx's error with the cells done so far.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	rep := &Report{
		Schema:  SchemaVersion,
		Started: start.UTC().Truncate(time.Second),
		Command: o.Command,
		Host:    host(),
		Notes:   []string{},
		Cells:   []Cell{},
	}
	path := DefaultPath
	if o.Path != nil {
		path = *o.Path
	}
	sel, err := o.selection()
	if err != nil {
		return nil, err
	}
	rep.Settings = Settings{
		Quick: o.Quick, Trials: o.Trials, Networks: sel.networks, Scenarios: sel.scenarios, Clients: sel.clients,
		Strategies: sel.strategies, DelayMs: float64(path.Delay) / float64(time.Millisecond),
		LossPercent: path.Loss * 100,
	}
	for _, c := range sel.clients {
		if why := clientMissing(c); why != "" {
			rep.note(o.Progress, "client %s skipped: %s", c, why)
			sel.clients = slices.DeleteFunc(sel.clients, func(s string) bool { return s == c })
		}
	}

	dir, err := os.MkdirTemp("", "linger-lab-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ca, files, bodies, err := prepare(dir)
	if err != nil {
		return nil, err
	}

	plans := o.plan(sel)
	pos := progress{}
	for _, netID := range sel.networks {
		pos.total += len(plans[netID])
	}
	for _, netID := range sel.networks {
		if len(plans[netID]) == 0 {
			continue
		}
		var nw *network
		switch netID {
		case "loopback":
			nw = loopback()
		case "netns":
			if why := netnsUnavailable(); why != "" {
				rep.note(o.Progress, "network namespaces skipped, loopback only: %s", why)
				pos.total -= len(plans[netID])
				continue
			}
			// Namespaces of an earlier lab that was killed before it could
			// remove them.
			netns.CleanupStale()
			nw, err = namespaces(path)
			if err != nil {
				return rep.finish(start), fmt.Errorf("lab: network namespaces: %w", err)
			}
		}
		for _, p := range plans[netID] {
			t := &trial{nw: nw, sc: p.sc, ca: ca, files: files, body: bodies[p.sc.upload]}
			cell, cerr := runCell(ctx, &o, t, p, pos)
			pos.done++
			if cerr != nil {
				err = cerr
				break
			}
			rep.Cells = append(rep.Cells, cell)
			if o.Progress != nil {
				// On a terminal the line is redrawn in place, cleared
				// once the run ends; elsewhere (a log, CI) a line a cell.
				if o.Live {
					fmt.Fprintf(o.Progress, "\r\033[K[%3d/%d] %s", pos.done, pos.total, cellLine(&cell))
				} else {
					fmt.Fprintf(o.Progress, "[%3d/%d] %s\n", pos.done, pos.total, cellLine(&cell))
				}
			}
		}
		// Also on error and on Ctrl-C: namespaces, devices, rules and the
		// forwarder go with the network.
		err = errors.Join(err, nw.close())
		if err != nil {
			return rep.finish(start), err
		}
	}
	if o.Live && o.Progress != nil {
		fmt.Fprint(o.Progress, "\r\033[K")
	}
	return rep.finish(start), ctx.Err()
}

// selection is what Options chose of each dimension of the matrix, checked
// and in the matrix's order.
type selection struct {
	networks, scenarios, clients, strategies []string
}

func (o *Options) selection() (selection, error) {
	var sel selection
	var err error
	if sel.networks, err = selectIDs("network", o.Networks, Networks); err != nil {
		return sel, err
	}
	if sel.scenarios, err = selectIDs("scenario", o.Scenarios, scenarioIDs()); err != nil {
		return sel, err
	}
	if sel.clients, err = selectIDs("client", o.Clients, Clients); err != nil {
		return sel, err
	}
	if sel.strategies, err = selectIDs("strategy", o.Strategies, Strategies); err != nil {
		return sel, err
	}
	return sel, nil
}

// cellPlan is one cell to run: a scenario, a client and a server close
// strategy, with its number of trials.
type cellPlan struct {
	sc               Scenario
	client, strategy string
	trials           int
}

// plan lists the cells to run on each network. In the namespaces, where
// every trial is slow, the scenarios (and with Quick the clients and
// strategies) default to fewer than on loopback.
func (o *Options) plan(sel selection) map[string][]cellPlan {
	plans := map[string][]cellPlan{}
	for _, netID := range sel.networks {
		scs, cls, sts := sel.scenarios, sel.clients, sel.strategies
		if netID == "netns" && len(o.Scenarios) == 0 {
			scs = netnsScenarios
		}
		if netID == "netns" && o.Quick {
			if len(o.Clients) == 0 {
				cls = quickNetns.clients
			}
			if len(o.Strategies) == 0 {
				sts = quickNetns.strategies
			}
		}
		for _, id := range scs {
			sc, _ := scenarioByID(id)
			for _, client := range cls {
				if !slices.Contains(sc.Clients, client) || !slices.Contains(sel.clients, client) {
					continue
				}
				for _, strategy := range sts {
					plans[netID] = append(plans[netID], cellPlan{sc, client, strategy, defaultTrials(o, netID, id)})
				}
			}
		}
	}
	return plans
}

// prepare writes what the trials share into dir: a PKI and a body file for
// each upload size, by size.
func prepare(dir string) (*pki.PKI, pki.Files, map[int]string, error) {
	ca, err := pki.NewPKI()
	if err != nil {
		return nil, pki.Files{}, nil, err
	}
	files, err := ca.WriteFiles(dir)
	if err != nil {
		return nil, pki.Files{}, nil, err
	}
	bodies := map[int]string{}
	for _, sc := range Scenarios {
		if _, ok := bodies[sc.upload]; !ok {
			p := filepath.Join(dir, fmt.Sprintf("body-%d", sc.upload))
			if err := os.WriteFile(p, make([]byte, sc.upload), 0o600); err != nil {
				return nil, pki.Files{}, nil, err
			}
			bodies[sc.upload] = p
		}
	}
	return ca, files, bodies, nil
}

// progress is where a run is: cells done of the total.
type progress struct{ done, total int }

func (r *Report) finish(start time.Time) *Report {
	r.Seconds = time.Since(start).Seconds()
	return r
}

func (r *Report) note(w io.Writer, format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.Notes = append(r.Notes, s)
	if w != nil {
		fmt.Fprintf(w, "note: %s\n", s)
	}
}

// netnsUnavailable says why namespaces cannot be made here, or "".
func netnsUnavailable() string {
	if runtime.GOOS != "linux" {
		return "network namespaces need Linux"
	}
	if os.Geteuid() != 0 {
		return "network namespaces need root"
	}
	return ""
}

func cellLine(c *Cell) string {
	reached := ""
	if c.Reached != nil {
		reached = fmt.Sprintf(", reached %d", *c.Reached)
	}
	rst := ""
	if c.ServerRSTs != nil {
		rst = fmt.Sprintf(", %d RSTs", *c.ServerRSTs)
	}
	return fmt.Sprintf("%-8s %-9s %-8s %-6s %s%s%s, hold p50 %s p99 %s (%.1f s)",
		c.Network, c.Scenario, c.Client, c.Strategy, fmt.Sprintf("%d/%d", c.Success, c.Trials), reached, rst,
		fmtMs(c.Hold.P50Ms), fmtMs(c.Hold.P99Ms), c.Seconds)
}

// runCell runs one cell's trials against a fresh server; pos is for the
// progress line.
func runCell(ctx context.Context, o *Options, t *trial, p cellPlan, pos progress) (Cell, error) {
	client, strategy, trials := p.client, p.strategy, p.trials
	start := time.Now()
	nw := t.nw
	cell := Cell{
		Network: nw.id, Path: nw.path, Scenario: t.sc.ID, Client: client, Strategy: strategy,
		Trials: trials, Parallel: cellParallel(o, nw, t.sc.ID, strategy),
		Errors: map[string]int{}, ServerOutcomes: map[string]int{},
	}
	var before netns.Counters
	if nw.counters != nil {
		var err error
		if before, err = nw.counters(); err != nil {
			return cell, err
		}
	}
	srv, err := startServer(ctx, nw, t.sc, strategy, t.ca)
	if err != nil {
		return cell, err
	}
	t.addr = srv.addr()
	_, t.port, _ = net.SplitHostPort(t.addr)

	results := make([]result, trials)
	var next, finished atomic.Int64
	var wg sync.WaitGroup
	run := clientFuncs[client]
	for range cell.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= trials || ctx.Err() != nil {
					return
				}
				results[i] = run(ctx, t)
				n := finished.Add(1)
				if o.Live && o.Progress != nil {
					fmt.Fprintf(o.Progress, "\r\033[K[%3d/%d] %s %s %s %s: trial %d/%d",
						pos.done+1, pos.total, nw.id, t.sc.ID, client, strategy, n, trials)
				}
			}
		}()
	}
	wg.Wait()

	// The server's sockets are released when the strategy says so (linger:
	// when the peers close, within its bounds); only Ctrl-C cuts that
	// short.
	recs, serr := srv.stop(ctx)
	if ctx.Err() != nil {
		return cell, ctx.Err()
	}
	if serr != nil {
		return cell, serr
	}
	if nw.counters != nil {
		// Segments still on the path reach closed sockets and draw RSTs
		// that belong to this cell.
		time.Sleep(nw.settle)
		after, err := nw.counters()
		if err != nil {
			return cell, err
		}
		d := after.Sub(before)
		cell.ServerRSTs, cell.ServerAbortOnClose = &d.OutRsts, &d.AbortOnClose
	}

	known, reached := false, 0
	for _, r := range results {
		if r.ok {
			cell.Success++
		} else {
			cell.Errors[r.first]++
		}
		if r.reached >= 0 {
			known = true
		}
		if r.reached == 1 {
			reached++
		}
	}
	if known {
		cell.Reached = &reached
	}
	for _, r := range recs {
		cell.ServerOutcomes[r.outcome]++
		if r.discarded > 0 {
			cell.DiscardedBytes += r.discarded
		}
	}
	cell.Hold = newHold(recs)
	cell.Seconds = time.Since(start).Seconds()
	return cell, nil
}

func host() Host {
	h := Host{Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		Root: os.Geteuid() == 0}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	return h
}
