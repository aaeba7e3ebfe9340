package lab

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/linger-go/linger/internal/bytesize"
	"github.com/linger-go/linger/internal/quantile"
)

// SchemaVersion names the JSON layout of a Report. It changes only when a
// field is removed or changes meaning; fields may be added without it
// changing. docs/lab-json.md documents every field.
const SchemaVersion = "linger-lab/1"

// Report is the result of a lab run, as written by --json.
type Report struct {
	Schema   string    `json:"schema"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Command  string    `json:"command"`
	Host     Host      `json:"host"`
	Settings Settings  `json:"settings"`
	// Notes says what was skipped and why (a client not installed, no
	// root for namespaces).
	Notes []string `json:"notes"`
	Cells []Cell   `json:"cells"`
	// Check is the outcome of --check; absent without it.
	Check *Check `json:"check,omitempty"`
}

// Host describes the machine the lab ran on.
type Host struct {
	Go     string `json:"go"`
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	Root   bool   `json:"root"`
}

// Settings are the options the run used.
type Settings struct {
	Quick      bool     `json:"quick"`
	Trials     int      `json:"trials"` // 0: the defaults per network and scenario
	Networks   []string `json:"networks"`
	Scenarios  []string `json:"scenarios"`
	Clients    []string `json:"clients"`
	Strategies []string `json:"strategies"`
	// DelayMs is the one-way delay of the namespace path, LossPercent its
	// loss in each direction.
	DelayMs     float64 `json:"delay_ms"`
	LossPercent float64 `json:"loss_percent"`
}

// Cell is one combination of network, scenario, client and strategy, run
// Trials times.
type Cell struct {
	Network  string `json:"network"`
	Path     string `json:"path"`
	Scenario string `json:"scenario"`
	Client   string `json:"client"`
	Strategy string `json:"strategy"`
	Trials   int    `json:"trials"`
	Parallel int    `json:"parallel"`
	// Success counts the trials in which the client application reported
	// the server's alert first (rejection scenarios), got all 4 MiB and a
	// clean end (midstream), or got the 413 (http413).
	Success int `json:"success"`
	// Reached counts the trials in which the server's last word at least
	// reached the client: the alert was readable in its socket or read by
	// its TLS layer, or the 413 was read. Null where the lab cannot tell.
	Reached *int `json:"reached"`
	// ServerRSTs is the server namespace's TcpOutRsts over the cell, and
	// ServerAbortOnClose its TcpExtTCPAbortOnClose. Null on loopback.
	ServerRSTs         *uint64 `json:"server_rsts"`
	ServerAbortOnClose *uint64 `json:"server_abort_on_close"`
	// Hold is how long the server held its sockets after deciding to
	// close them.
	Hold Hold `json:"hold"`
	// DiscardedBytes totals what the server threw away: bytes unread at
	// close (close, rst, sleep) or read and discarded (linger).
	DiscardedBytes int64 `json:"discarded_bytes"`
	// Errors counts, over the trials that did not succeed, the client's
	// first error by a short name ("connection reset", "broken pipe").
	Errors map[string]int `json:"errors"`
	// ServerOutcomes counts how the server's connections ended: the
	// strategy's name, or linger's Outcome.
	ServerOutcomes map[string]int `json:"server_outcomes"`
	Seconds        float64        `json:"seconds"`
}

// Hold summarizes the server's hold times, in milliseconds.
type Hold struct {
	P50Ms     float64   `json:"p50_ms"`
	P99Ms     float64   `json:"p99_ms"`
	MaxMs     float64   `json:"max_ms"`
	SamplesMs []float64 `json:"samples_ms"`
}

// Rate is Success/Trials.
func (c *Cell) Rate() float64 {
	if c.Trials == 0 {
		return 0
	}
	return float64(c.Success) / float64(c.Trials)
}

func newHold(recs []closeRecord) Hold {
	var h Hold
	for _, r := range recs {
		h.SamplesMs = append(h.SamplesMs, float64(r.held)/float64(time.Millisecond))
	}
	sort.Float64s(h.SamplesMs)
	h.P50Ms = quantile.NearestRank(h.SamplesMs, 0.50)
	h.P99Ms = quantile.NearestRank(h.SamplesMs, 0.99)
	if n := len(h.SamplesMs); n > 0 {
		h.MaxMs = h.SamplesMs[n-1]
	}
	return h
}

// WriteJSON writes r as indented JSON to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads a Report written by WriteJSON.
func ReadJSON(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("lab: %s has schema %q, want %q", path, r.Schema, SchemaVersion)
	}
	return &r, nil
}

// matrixRow is one row of the summary table: a network, scenario and client
// with a cell per strategy.
type matrixRow struct {
	Network, Path, Scenario, Client string
	Cells                           map[string]*Cell
}

func (r *Report) matrix() ([]matrixRow, []string) {
	var rows []matrixRow
	var strategies []string
	for i := range r.Cells {
		c := &r.Cells[i]
		if !slices.Contains(strategies, c.Strategy) {
			strategies = append(strategies, c.Strategy)
		}
		n := len(rows)
		if n == 0 || rows[n-1].Network != c.Network || rows[n-1].Path != c.Path ||
			rows[n-1].Scenario != c.Scenario || rows[n-1].Client != c.Client {
			rows = append(rows, matrixRow{c.Network, c.Path, c.Scenario, c.Client, map[string]*Cell{}})
			n++
		}
		rows[n-1].Cells[c.Strategy] = c
	}
	slices.SortStableFunc(strategies, func(a, b string) int {
		return slices.Index(Strategies, a) - slices.Index(Strategies, b)
	})
	return rows, strategies
}

// stockClients are the clients that hide the alert whatever the server
// does (goHTTPNote): the table shows their rows apart, and the verdict
// leaves them out, since no server can make them report it.
var stockClients = []string{"go-http", "go-http-h2"}

// clientFamily groups a client with its other protocol, for the verdict.
func clientFamily(client string) string {
	if f, ok := strings.CutSuffix(client, "-h2"); ok {
		return f
	}
	return client
}

// WriteTable writes the report for a terminal, every line within 100
// columns: a one-line verdict first, then the matrix of success per
// strategy, the stock clients' rows apart, and what it all means. WriteCells
// writes the evidence of every cell.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n", r.Verdict())
	rows, strategies := r.matrix()
	var ours, stock []matrixRow
	for _, row := range rows {
		if slices.Contains(stockClients, row.Client) {
			stock = append(stock, row)
		} else {
			ours = append(ours, row)
		}
	}
	fmt.Fprintf(w, "\nSuccess / trials (reached the client, where it differs):\n\n")
	writeMatrix(w, ours, strategies)
	if len(stock) > 0 {
		fmt.Fprintf(w, "\nStock net/http clients, which hide the alert whatever the server does (see below):\n\n")
		writeMatrix(w, stock, strategies)
	}
	var paths []string
	for _, row := range rows {
		if row.Network != row.Path && !slices.Contains(paths, row.Network+": "+row.Path) {
			paths = append(paths, row.Network+": "+row.Path)
		}
	}
	if len(paths) > 0 {
		fmt.Fprintf(w, "\nNetworks: %s.\n", strings.Join(paths, "; "))
	}
	r.writeLegend(w)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\n%s", wrap("note: "+n, 100))
	}
	fmt.Fprintf(w, "\n\n%d cells in %.0f s on %s/%s, Linux %s, %d CPUs, %s.\n", len(r.Cells), r.Seconds,
		r.Host.OS, r.Host.Arch, r.Host.Kernel, r.Host.CPUs, r.Host.Go)
}

// writeMatrix writes rows as an aligned text table, a column per strategy.
func writeMatrix(w io.Writer, rows []matrixRow, strategies []string) {
	table := [][]string{append([]string{"network", "scenario", "client"}, strategies...)}
	for _, row := range rows {
		line := []string{row.Network, row.Scenario, row.Client}
		for _, s := range strategies {
			c := row.Cells[s]
			switch {
			case c == nil:
				line = append(line, "")
			case c.Reached != nil && *c.Reached != c.Success:
				line = append(line, fmt.Sprintf("%d/%d (%d)", c.Success, c.Trials, *c.Reached))
			default:
				line = append(line, fmt.Sprintf("%d/%d", c.Success, c.Trials))
			}
		}
		table = append(table, line)
	}
	width := make([]int, len(table[0]))
	for _, line := range table {
		for i, f := range line {
			width[i] = max(width[i], len(f))
		}
	}
	for _, line := range table {
		var b strings.Builder
		for i, f := range line {
			if i > 0 {
				b.WriteString("  ")
			}
			if i < 3 {
				fmt.Fprintf(&b, "%-*s", width[i], f)
			} else {
				fmt.Fprintf(&b, "%*s", width[i], f)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// Verdict sums the run up in one line: how often linger delivered the last
// word against the other strategies over the same cells, and per client
// family linger's rate against the best other strategy's. The stock
// net/http clients are left out (see goHTTPNote): no server can make them
// report the alert.
func (r *Report) Verdict() string {
	type tally struct{ ok, n int }
	by := map[string]*tally{}
	fam := map[string]map[string]*tally{} // family, strategy
	var families []string
	add := func(m map[string]*tally, k string, c *Cell) {
		if m[k] == nil {
			m[k] = &tally{}
		}
		m[k].ok += c.Success
		m[k].n += c.Trials
	}
	for i := range r.Cells {
		c := &r.Cells[i]
		if slices.Contains(stockClients, c.Client) {
			continue
		}
		add(by, c.Strategy, c)
		f := clientFamily(c.Client)
		if fam[f] == nil {
			fam[f] = map[string]*tally{}
			families = append(families, f)
		}
		add(fam[f], c.Strategy, c)
	}
	rate := func(t *tally) float64 { return 100 * float64(t.ok) / float64(max(t.n, 1)) }
	l := by["linger"]
	if l == nil {
		return "verdict: no linger cells in this run."
	}
	lo, hi := 101.0, -1.0
	for s, t := range by {
		if s != "linger" {
			lo, hi = min(lo, rate(t)), max(hi, rate(t))
		}
	}
	v := fmt.Sprintf("verdict: linger delivered in %.0f%% of %d trials", rate(l), l.n)
	switch {
	case hi < 0:
	case fmt.Sprintf("%.0f", lo) == fmt.Sprintf("%.0f", hi):
		v += fmt.Sprintf(", the others in %.0f%%", lo)
	default:
		v += fmt.Sprintf(", the others in %.0f-%.0f%%", lo, hi)
	}
	var fs []string
	for _, f := range families {
		lt := fam[f]["linger"]
		if lt == nil {
			continue
		}
		best := -1.0
		for s, t := range fam[f] {
			if s != "linger" {
				best = max(best, rate(t))
			}
		}
		if best < 0 {
			fs = append(fs, fmt.Sprintf("%s %.0f", f, rate(lt)))
		} else {
			fs = append(fs, fmt.Sprintf("%s %.0f/%.0f", f, rate(lt), best))
		}
	}
	if len(fs) > 0 {
		v += "; linger/best other: " + strings.Join(fs, ", ")
	}
	return v
}

// WriteCells writes every cell with its evidence, as a wide Markdown table:
// the server's resets, hold times, bytes discarded and the client's errors.
func (r *Report) WriteCells(w io.Writer) {
	fmt.Fprintf(w, "\n| network | scenario | client | server close | success | reached | server RSTs (abort on close) | hold p50 | hold p99 | discarded/trial | client's first error (most common other) |\n")
	fmt.Fprintf(w, "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for i := range r.Cells {
		c := &r.Cells[i]
		rst := "-"
		if c.ServerRSTs != nil {
			rst = fmt.Sprintf("%d (%d)", *c.ServerRSTs, *c.ServerAbortOnClose)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s |\n",
			c.Path, c.Scenario, c.Client, c.Strategy, c.Success, c.Trials, reachedText(c), rst,
			fmtMs(c.Hold.P50Ms), fmtMs(c.Hold.P99Ms), bytesize.Format(c.DiscardedBytes/int64(max(c.Trials, 1))),
			topError(c))
	}
}

// goHTTPNote explains the stock net/http client's row wherever it is shown.
const goHTTPNote = "go-http, the stock net/http client, hides the alert itself, whatever the server does: " +
	"its read loop sees the alert and closes the connection, and the caller gets the write loop's error instead. " +
	"Whether the alert still comes out first is a race inside the client, so its linger column can be lower " +
	"than sleep's; the count in parentheses shows that the alert did reach it. go-alert is the same client " +
	"with package alert, which reports the alert."

// writeLegend says, under the tables, what the strategies and "success"
// are, for the strategies and scenarios in the report.
func (r *Report) writeLegend(w io.Writer) {
	_, strategies := r.matrix()
	fmt.Fprintf(w, "\nServer close strategies (columns):\n")
	for _, s := range strategies {
		fmt.Fprintf(w, "  %-7s %s\n", s, StrategyTitles[s])
	}
	fmt.Fprintf(w, "\nSuccess: the trials in which the client application got the server's last word, per scenario:\n")
	goHTTP := false
	for _, sc := range Scenarios {
		if !slices.ContainsFunc(r.Cells, func(c Cell) bool { return c.Scenario == sc.ID }) {
			continue
		}
		// Continuation lines indented under the text, within 100 columns.
		fmt.Fprintf(w, "  %-10s %s\n", sc.ID, strings.ReplaceAll(wrap(sc.Success, 100-13), "\n", "\n"+strings.Repeat(" ", 13)))
		goHTTP = goHTTP || sc.rejects && slices.ContainsFunc(r.Cells, func(c Cell) bool {
			return c.Scenario == sc.ID && c.Client == "go-http"
		})
	}
	fmt.Fprintf(w, "%s\n", wrap("In parentheses, where it differs: the trials in which it at least reached the client "+
		"(readable in its socket, or read by its TLS layer), reported or not.", 100))
	if goHTTP {
		fmt.Fprintf(w, "\n%s\n", wrap(goHTTPNote, 100))
	}
}

// wrap breaks s into lines of at most width bytes at spaces.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, word := range strings.Fields(s) {
		if i > 0 {
			if n+1+len(word) > width {
				b.WriteByte('\n')
				n = 0
			} else {
				b.WriteByte(' ')
				n++
			}
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

func reachedText(c *Cell) string {
	if c.Reached == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", *c.Reached, c.Trials)
}

// topError names the most common failure of a cell, "" if none failed.
func topError(c *Cell) string {
	best, n := "", 0
	for k, v := range c.Errors {
		if v > n || v == n && k < best {
			best, n = k, v
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("%s ×%d", best, n)
}

func fmtMs(ms float64) string {
	switch {
	case ms == 0:
		return "0"
	case ms < 1:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0f ms", ms)
	default:
		return fmt.Sprintf("%.2f s", ms/1000)
	}
}
