//go:build linux

package bench

import (
	"fmt"
	"io"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Summary is the last table "linger bench" prints: each target the run
// measured, with the figure, its baseline from the same run, and whether
// the target was met. It says where and how it was measured, so that it
// can be pasted into a document as it is.
type Summary struct {
	Command string        `json:"command"`
	Smoke   bool          `json:"smoke"`
	Machine Machine       `json:"machine"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Targets []TargetRow   `json:"targets"`
	// Notes name the targets this run did not measure, and why.
	Notes []string `json:"notes"`
}

// TargetRow is one target: what was measured, the bound, the figure and its
// baseline, as text, and Value, the figure the bound applies to.
type TargetRow struct {
	Benchmark string  `json:"benchmark"`
	What      string  `json:"what"`
	Target    string  `json:"target"` // "≥ 0.97x", "≤ 256 B"; empty when the figure is only reported
	Measured  string  `json:"measured"`
	Baseline  string  `json:"baseline"`
	Value     float64 `json:"value"`
	Status    string  `json:"status"` // met, not met or reported
}

// The statuses of a TargetRow.
const (
	statusMet      = "met"
	statusNotMet   = "not met"
	statusReported = "reported"
)

// bound is a target's limit: Value must be at most v (atMost) or at least
// v. unit follows the number when printed ("x" for ratios).
type bound struct {
	v      float64
	atMost bool
	unit   string
}

func atMost(v float64, unit string) bound  { return bound{v, true, unit} }
func atLeast(v float64, unit string) bound { return bound{v, false, unit} }

func (b bound) met(v float64) bool {
	if b.atMost {
		return v <= b.v
	}
	return v >= b.v
}

func (b bound) String() string {
	op := "≥"
	if b.atMost {
		op = "≤"
	}
	// Whole numbers of 10 or more need no decimals (≤ 256 B, ≥ 50x); a
	// ratio near 1 keeps two (≤ 1.00x, ≥ 0.90x).
	if b.v >= 10 && b.v == math.Trunc(b.v) {
		return fmt.Sprintf("%s %.0f%s", op, b.v, b.unit)
	}
	return fmt.Sprintf("%s %.2f%s", op, b.v, b.unit)
}

// row makes a TargetRow with its status from the bound.
func row(bench, what string, b bound, value float64, measured, baseline string) TargetRow {
	st := statusNotMet
	if b.met(value) {
		st = statusMet
	}
	return TargetRow{Benchmark: bench, What: what, Target: b.String(), Measured: measured, Baseline: baseline, Value: value, Status: st}
}

// reported makes a TargetRow for a figure that has no bound.
func reported(bench, what string, value float64, measured, baseline string) TargetRow {
	return TargetRow{Benchmark: bench, What: what, Measured: measured, Baseline: baseline, Value: value, Status: statusReported}
}

// summaryInput is what the benchmarks of one run returned; a nil slice is a
// benchmark that did not run.
type summaryInput struct {
	held  []HeldResult
	hold  []HoldResult
	flood []FloodResult
	happy []HappyResult
	cpus  int // for the happy path's server share of the machine
}

// lifecycleNote says where the targets on a connection's system calls, and
// its CPU with the clients in the server's own process, are measured: not
// by "linger bench" (hold measures the CPU with the peers in another
// process) but by perf around the engine's lifecycle benchmarks.
const lifecycleNote = "system calls per connection against a goroutine per socket, and CPU with the clients in the server's process: not measured by linger bench; " +
	"`go test -c -o /tmp/after.test . && internal/bench/perf_lifecycle.sh BenchmarkLifecycleServing \"naive loop\" 5 5000 /tmp/after.test` prints them"

// floodRateTarget is the least linger/plain rate of rejected handshakes
// for each kind of flood client; other kinds have no target.
var floodRateTarget = map[string]float64{
	"upload-1k":   0.95,
	"upload-1m":   0.95,
	"cooperative": 0.90,
	"deaf":        0.85,
}

// happyWant are the load generators whose figures the targets cover.
var happyWant = []string{"wrk-keepalive", "wrk-close", "h2load"}

// summarize turns a run's results into the targets' rows, and notes for
// the targets the run did not measure.
func summarize(in summaryInput) (rows []TargetRow, notes []string) {
	add := func(r []TargetRow, n []string) {
		rows = append(rows, r...)
		notes = append(notes, n...)
	}
	add(summarizeHeld(in.held))
	add(summarizeHold(in.hold))
	add(summarizeFlood(in.flood))
	add(summarizeHappy(in.happy, in.cpus))
	notes = append(notes, lifecycleNote)
	return rows, notes
}

// loopAndNaive returns the first results of rs in the modes loop and
// naive, which the memory and hold targets compare: the zero R for a mode
// that did not run, which its caller's check of the figures turns away.
func loopAndNaive[R any](rs []R, mode func(R) string) (loop, naive R) {
	var okL, okN bool
	for _, r := range rs {
		switch {
		case !okL && mode(r) == "loop":
			loop, okL = r, true
		case !okN && mode(r) == "naive":
			naive, okN = r, true
		}
	}
	return loop, naive
}

func summarizeHeld(rs []HeldResult) ([]TargetRow, []string) {
	if rs == nil {
		return nil, []string{"memory per socket: held did not run (`linger bench held`)"}
	}
	loop, naive := loopAndNaive(rs, func(r HeldResult) string { return r.Mode })
	if loop.GoPerConn <= 0 || naive.GoPerConn <= 0 {
		return nil, []string{"memory per socket: held needs the modes loop and naive (-modes)"}
	}
	b := "held"
	what := func(s string) string { return fmt.Sprintf("%s, %s sockets", s, thousands(float64(loop.N))) }
	rows := []TargetRow{
		row(b, what("Go memory (heap + stacks) per lingering socket, event loop"), atMost(256, " B"), loop.GoPerConn,
			fmtBytes(loop.GoPerConn), "naive "+fmtBytes(naive.GoPerConn)),
		row(b, what("Go memory per socket, naive/loop"), atLeast(50, "x"), naive.GoPerConn/loop.GoPerConn,
			fmt.Sprintf("%.1fx", naive.GoPerConn/loop.GoPerConn), "naive "+fmtBytes(naive.GoPerConn)),
		reported(b, what("RSS per socket, event loop"), loop.RSSPerConn,
			fmtBytes(loop.RSSPerConn), fmt.Sprintf("naive %s (%.1fx)", fmtBytes(naive.RSSPerConn), naive.RSSPerConn/max(loop.RSSPerConn, 1))),
	}
	if loop.SlabPerConn <= 0 || naive.SlabPerConn <= 0 {
		return rows, []string{"kernel slab per socket: not read (/proc/slabinfo needs root)"}
	}
	// The peers' ends are on this machine too: one end is half the growth.
	ls, ns := loop.SlabPerConn/2, naive.SlabPerConn/2
	rows = append(rows,
		reported(b, what("kernel slab per socket (half the growth of both ends)"), ls, fmtBytes(ls), "naive "+fmtBytes(ns)),
		reported(b, what("everything per socket, Go memory + kernel slab"), loop.GoPerConn+ls,
			fmtBytes(loop.GoPerConn+ls), fmt.Sprintf("naive %s (%.1fx)", fmtBytes(naive.GoPerConn+ns), (naive.GoPerConn+ns)/(loop.GoPerConn+ls))),
		reported(b, what("everything per socket, RSS + kernel slab"), loop.RSSPerConn+ls,
			fmtBytes(loop.RSSPerConn+ls), fmt.Sprintf("naive %s (%.1fx)", fmtBytes(naive.RSSPerConn+ns), (naive.RSSPerConn+ns)/(loop.RSSPerConn+ls))),
	)
	return rows, nil
}

func summarizeHold(rs []HoldResult) ([]TargetRow, []string) {
	if rs == nil {
		return nil, []string{"hold p50: hold did not run (`linger bench hold`)"}
	}
	loop, naive := loopAndNaive(rs, func(r HoldResult) string { return r.Mode })
	if loop.P50 <= 0 || naive.P50 <= 0 {
		return nil, []string{"hold p50: hold needs the modes loop and naive (-modes) and matched connections"}
	}
	at := ""
	if loop.At > 0 {
		at = fmt.Sprintf(", %d at a time", loop.At)
	}
	ratio := float64(loop.P50) / float64(naive.P50)
	rows := []TargetRow{row("hold", fmt.Sprintf("hold p50 from the peer's FIN to the release, loop/naive, %s connections%s", thousands(float64(loop.N)), at),
		atMost(1, "x"), ratio, fmt.Sprintf("%s (%.2fx)", micros(loop.P50), ratio), "naive "+micros(naive.P50))}
	if loop.CPU > 0 && naive.CPU > 0 {
		r := float64(loop.CPU) / float64(naive.CPU)
		rows = append(rows, row("hold", fmt.Sprintf("server CPU per connection, loop/naive, %s connections%s, peers in another process", thousands(float64(loop.N)), at),
			atMost(1, "x"), r, fmt.Sprintf("%.1f µs (%.2fx)", float64(loop.CPU)/1e3, r), fmt.Sprintf("naive %.1f µs", float64(naive.CPU)/1e3)))
	}
	return rows, nil
}

func summarizeFlood(rs []FloodResult) ([]TargetRow, []string) {
	if rs == nil {
		return nil, []string{"flood rate and CPU per rejection: flood did not run (`linger bench flood`)"}
	}
	var rows []TargetRow
	var notes []string
	var kinds []string
	plain, linger := map[string][]FloodResult{}, map[string][]FloodResult{}
	for _, r := range rs {
		if _, ok := plain[r.Clients]; !ok {
			if _, ok := linger[r.Clients]; !ok {
				kinds = append(kinds, r.Clients)
			}
		}
		switch r.Mode {
		case "plain":
			plain[r.Clients] = append(plain[r.Clients], r)
		case "linger":
			linger[r.Clients] = append(linger[r.Clients], r)
		}
	}
	// The ratios are the medians of the rounds' own linger/plain ratios, as
	// the flood prints them: each round pairs modes measured back to back,
	// which an average over all rounds would not.
	ratios := map[string]FloodRatio{}
	others := map[string]bool{}
	for _, q := range floodRatios(rs, "plain") {
		if q.Mode == "linger" {
			ratios[q.Clients] = q
		} else {
			others[q.Mode] = true
		}
	}
	for _, k := range kinds {
		p, l := plain[k], linger[k]
		q, ok := ratios[k]
		if len(p) == 0 || len(l) == 0 || !ok {
			notes = append(notes, fmt.Sprintf("flood %s: needs the modes plain and linger (-flood-modes)", k))
			continue
		}
		var pRate, pCPU float64
		for _, r := range p {
			pRate += r.PerSec / float64(len(p))
			pCPU += floodCPU(r) / float64(len(p))
		}
		if pRate <= 0 || pCPU <= 0 || len(q.Rate.All) == 0 {
			notes = append(notes, fmt.Sprintf("flood %s: plain rejected nothing", k))
			continue
		}
		what := fmt.Sprintf("flood %s: rejected handshakes/s, linger/plain, median of %d rounds", k, len(q.Rate.All))
		if t, ok := floodRateTarget[k]; ok {
			rows = append(rows, row("flood", what, atLeast(t, "x"), q.Rate.Median, q.Rate.String(), "plain "+thousands(pRate)+"/s"))
		} else {
			rows = append(rows, reported("flood", what, q.Rate.Median, q.Rate.String(), "plain "+thousands(pRate)+"/s"))
		}
		rows = append(rows, row("flood", fmt.Sprintf("flood %s: server CPU per rejection, linger/plain, median of %d rounds", k, len(q.CPU.All)),
			atMost(1.25, "x"), q.CPU.Median, q.CPU.String(), fmt.Sprintf("plain %.0f µs", pCPU)))
		if k == "upload-1m" || k == "cooperative" {
			r, n := floodAlerts(k, l)
			rows = append(rows, r...)
			notes = append(notes, n...)
		}
	}
	for _, m := range slices.Sorted(maps.Keys(others)) {
		notes = append(notes, fmt.Sprintf("flood mode %s: printed with the flood above, not summarized here", m))
	}
	return rows, notes
}

// floodCPU is a flood round's server CPU per rejected handshake, in µs.
func floodCPU(r FloodResult) float64 {
	return float64(r.CPU.Microseconds()) / float64(max(r.Rejected, 1))
}

// floodAlerts checks that clients that read see the alert in 99 % of
// handshakes when lingering stays below its cap; "linger bench all" sets
// the cap below the clients on purpose, and then the target does not
// apply. The cap counts as reached when a round's samples saw it, or when
// the Closer released a connection to make room or closed one plainly:
// the samples, 50 ms apart, can miss a short peak.
func floodAlerts(kind string, l []FloodResult) ([]TargetRow, []string) {
	var alerts, hs int64
	for _, r := range l {
		if r.MaxLingering >= r.Cap || r.Outcomes["released"] > 0 || r.Outcomes["plain"] > 0 {
			return nil, []string{fmt.Sprintf("flood %s: the alert in ≥ 99 %% of handshakes applies below the cap, which this run reached "+
				"(at most %d lingering of %d sampled, %d released to make room, %d closed plainly); "+
				"`linger bench -cap 128 -clients upload-1m,cooperative flood` measures it",
				kind, r.MaxLingering, r.Cap, r.Outcomes["released"], r.Outcomes["plain"])}
		}
		alerts += r.Client.Alerts
		hs += r.Client.Handshakes
	}
	if hs == 0 {
		return nil, []string{fmt.Sprintf("flood %s: no handshake completed", kind)}
	}
	share := float64(alerts) / float64(hs)
	return []TargetRow{row("flood", fmt.Sprintf("flood %s, below the cap: handshakes whose client saw the alert", kind), atLeast(99, " %"), 100*share,
		fmt.Sprintf("%.1f %% (%d of %d)", 100*share, alerts, hs), "–")}, nil
}

func summarizeHappy(rs []HappyResult, cpus int) ([]TargetRow, []string) {
	if rs == nil {
		return nil, []string{"happy path: happy did not run (`linger bench happy`)"}
	}
	var rows []TargetRow
	var notes []string
	stats := happyRatios(rs, cpus)
	for _, c := range happyWant {
		i := -1
		for j := range stats {
			if stats[j].Client == c && len(stats[j].PerSec) > 0 {
				i = j
			}
		}
		if i < 0 {
			notes = append(notes, fmt.Sprintf("happy %s: not measured (not installed, or not in -happy-clients)", c))
			continue
		}
		st := stats[i]
		rate, p99 := spread(st.PerSec), spread(st.P99)
		pairs := fmt.Sprintf("median of %d pairs (least–greatest)", len(st.PerSec))
		rows = append(rows,
			row("happy", fmt.Sprintf("happy %s: requests/s, linger/plain, %s", c, pairs), atLeast(0.97, "x"), rate.Median,
				rate.String(), "plain "+thousands(spread(st.PlainPerSec).Median)+"/s"),
			row("happy", fmt.Sprintf("happy %s: p99 latency, linger/plain, %s", c, pairs), atMost(1.05, "x"), p99.Median,
				p99.String(), fmt.Sprintf("plain %.2f ms", spread(st.PlainP99).Median/1e6)),
		)
		if st.ClientBusy > 0.9 {
			notes = append(notes, fmt.Sprintf("happy %s: the load generator used up to %.0f %% of a CPU: it, not the server, may set the pace", c, 100*st.ClientBusy))
		}
	}
	return rows, notes
}

func fmtBytes(v float64) string { return thousands(v) + " B" }

func micros(d time.Duration) string { return thousands(float64(d)/1e3) + " µs" }

// thousands prints v rounded, with commas: 15,000.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// printSummary prints s as markdown: a heading, where and how, the table,
// and the notes.
func printSummary(w io.Writer, s Summary) {
	fmt.Fprintf(w, "## Targets\n\n")
	m := s.Machine
	fmt.Fprintf(w, "`%s`: %d CPUs (%s), Linux %s, %s, %s; load average %s at the start, %s at the end.\n",
		s.Command, m.CPUs, m.Model, m.Kernel, m.Go, s.Elapsed.Round(time.Second), m.Load, m.LoadEnd)
	if s.Smoke {
		fmt.Fprintf(w, "**Smoke sizes: these figures check that the benchmarks run, not the targets.**\n")
	}
	fmt.Fprintf(w, "\n| benchmark | what | target | measured | baseline, same run | met |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range s.Targets {
		t := r.Target
		if t == "" {
			t = "–"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.Benchmark, r.What, t, r.Measured, r.Baseline, r.Status)
	}
	if len(s.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range s.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// newSummary gathers the results of one run, by the types the benchmarks
// return, into its Summary.
func newSummary(command string, smoke bool, m Machine, elapsed time.Duration, results map[string]any) Summary {
	in := summaryInput{cpus: runtime.NumCPU()}
	for _, r := range results {
		switch r := r.(type) {
		case []HeldResult:
			in.held = nonNil(r)
		case []HoldResult:
			in.hold = nonNil(r)
		case []FloodResult:
			in.flood = nonNil(r)
		case []HappyResult:
			in.happy = nonNil(r)
		}
	}
	rows, notes := summarize(in)
	return Summary{Command: command, Smoke: smoke, Machine: m, Elapsed: elapsed, Targets: rows, Notes: notes}
}

// nonNil keeps a benchmark that ran but returned no result apart from one
// that did not run.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
