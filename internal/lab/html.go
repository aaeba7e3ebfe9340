package lab

import (
	"bytes"
	"fmt"
	"html/template"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/linger-go/linger/internal/bytesize"
	"github.com/linger-go/linger/internal/quantile"
)

// strategyColors are the strategies' colors in every chart: warm for the
// closes that lose data, green for linger.
var strategyColors = map[string]string{
	"close":  "#d1495b",
	"rst":    "#7a1f2b",
	"sleep":  "#edae49",
	"linger": "#2a9d8f",
}

// WriteHTML writes the report as one self-contained HTML page to path: the
// charts are inline SVG, the style is inline, and nothing is fetched.
func (r *Report) WriteHTML(path string) error {
	b, err := r.HTML()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// HTML renders the report as a self-contained HTML page.
func (r *Report) HTML() ([]byte, error) {
	rows, strategies := r.matrix()
	data := struct {
		R          *Report
		Delivery   []template.HTML
		Hold       []template.HTML
		Legend     template.HTML
		Rows       []matrixRow
		Strategies []string
		Titles     map[string]string
		Scenarios  []Scenario
		Clients    map[string]string
		GoHTTP     string
	}{R: r, Rows: rows, Strategies: strategies, Titles: StrategyTitles, Scenarios: Scenarios, Clients: ClientTitles}
	if slices.ContainsFunc(r.Cells, func(c Cell) bool { return c.Client == "go-http" }) {
		data.GoHTTP = goHTTPNote
	}
	data.Legend = legend(strategies)
	for _, g := range r.scenarioGroups() {
		data.Delivery = append(data.Delivery, deliveryChart(g, strategies))
	}
	for _, p := range r.paths() {
		data.Hold = append(data.Hold, holdChart(r, p, strategies))
	}
	var out bytes.Buffer
	if err := pageTmpl.Execute(&out, data); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// scenarioGroup is the cells of one scenario on one path: one delivery chart.
type scenarioGroup struct {
	path, scenario string
	cells          []*Cell
}

func (r *Report) scenarioGroups() []scenarioGroup {
	var gs []scenarioGroup
	for i := range r.Cells {
		c := &r.Cells[i]
		n := len(gs)
		if n == 0 || gs[n-1].path != c.Path || gs[n-1].scenario != c.Scenario {
			gs = append(gs, scenarioGroup{path: c.Path, scenario: c.Scenario})
			n++
		}
		gs[n-1].cells = append(gs[n-1].cells, c)
	}
	return gs
}

func (r *Report) paths() []string {
	var ps []string
	for _, c := range r.Cells {
		if !slices.Contains(ps, c.Path) {
			ps = append(ps, c.Path)
		}
	}
	return ps
}

func legend(strategies []string) template.HTML {
	var b strings.Builder
	b.WriteString(`<div class="legend">`)
	for _, s := range strategies {
		fmt.Fprintf(&b, `<span><i style="background:%s"></i>%s</span>`, strategyColors[s], template.HTMLEscapeString(s))
	}
	b.WriteString(`<span><i class="reachbox"></i><i class="tick"></i>reached the client, not reported</span>`)
	b.WriteString(`<span><b class="zero">0</b> measured zero</span></div>`)
	return template.HTML(b.String())
}

// deliveryChart is a grouped bar chart: per client, a bar per strategy
// whose height is the share of trials that succeeded, and a tick at the
// share in which the server's last word at least reached the client.
func deliveryChart(g scenarioGroup, strategies []string) template.HTML {
	var clients []string
	for _, c := range g.cells {
		if !slices.Contains(clients, c.Client) {
			clients = append(clients, c.Client)
		}
	}
	const (
		left, top, bottom, plotH = 44, 34, 40, 180
		barW, gap, groupGap      = 16, 3, 26
	)
	groupW := len(strategies)*(barW+gap) - gap
	// Wide enough for the title even with a single client.
	width := max(left+len(clients)*(groupW+groupGap)+10, 330)
	height := top + plotH + bottom
	sc, _ := scenarioByID(g.scenario)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart delivery" data-scenario="%s" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`,
		g.scenario, width, height, width, height)
	fmt.Fprintf(&b, `<title>%s, %s: %s per strategy and client</title>`, esc(g.scenario), esc(g.path), esc(sc.Success))
	fmt.Fprintf(&b, `<text x="%d" y="16" class="t">%s · %s</text>`, left, esc(g.scenario), esc(g.path))
	fmt.Fprintf(&b, `<text x="%d" y="29" class="s">%s</text>`, left, esc(sc.Success))
	for _, pct := range []int{0, 25, 50, 75, 100} {
		y := top + plotH - pct*plotH/100
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" class="grid"/>`, left, width-10, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="ax" text-anchor="end">%d%%</text>`, left-6, y+4, pct)
	}
	for i, client := range clients {
		x0 := left + groupGap/2 + i*(groupW+groupGap)
		for j, s := range strategies {
			var c *Cell
			for _, cc := range g.cells {
				if cc.Client == client && cc.Strategy == s {
					c = cc
				}
			}
			if c == nil {
				continue
			}
			x := x0 + j*(barW+gap)
			h := int(math.Round(c.Rate() * plotH))
			// At least 2 px, so that a measured zero still shows its color.
			fmt.Fprintf(&b, `<rect class="bar" data-strategy="%s" x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s, %s: %d/%d</title></rect>`,
				s, x, top+plotH-max(h, 2), barW, max(h, 2), strategyColors[s], esc(client), esc(s), c.Success, c.Trials)
			if c.Reached != nil && c.Trials > 0 && *c.Reached > c.Success {
				// The trials in which the last word reached the client
				// but was not reported: an outlined box on top of the bar,
				// so that the tick at its top always sits on something.
				y := top + plotH - int(math.Round(float64(*c.Reached)/float64(c.Trials)*plotH))
				if rh := top + plotH - max(h, 2) - y; rh > 0 {
					fmt.Fprintf(&b, `<rect class="reachbar" x="%d" y="%d" width="%d" height="%d" stroke="%s"><title>%s, %s: reached %d/%d</title></rect>`,
						x, y, barW, rh, strategyColors[s], esc(client), esc(s), *c.Reached, c.Trials)
				}
				fmt.Fprintf(&b, `<line class="reach" x1="%d" x2="%d" y1="%d" y2="%d"><title>reached %d/%d</title></line>`,
					x-1, x+barW+1, y, y, *c.Reached, c.Trials)
			}
			if c.Success == 0 {
				// A measured zero, told apart from a strategy not run
				// (no bar, no label).
				fmt.Fprintf(&b, `<text class="zero" x="%d" y="%d" text-anchor="middle">0</text>`,
					x+barW/2, top+plotH-5)
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="ax" text-anchor="middle">%s</text>`, x0+groupW/2, top+plotH+16, esc(client))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// holdChart plots every trial's server hold time on a log scale, a row per
// scenario and strategy, with the median marked.
func holdChart(r *Report, path string, strategies []string) template.HTML {
	type row struct {
		scenario, strategy string
		samples            []float64
	}
	var rows []row
	for _, c := range r.Cells {
		if c.Path != path {
			continue
		}
		i := slices.IndexFunc(rows, func(x row) bool { return x.scenario == c.Scenario && x.strategy == c.Strategy })
		if i < 0 {
			rows = append(rows, row{scenario: c.Scenario, strategy: c.Strategy})
			i = len(rows) - 1
		}
		rows[i].samples = append(rows[i].samples, c.Hold.SamplesMs...)
	}
	const (
		left, top, rowH, plotW = 170, 40, 16, 620
		lo, hi                 = 0.01, 30000.0 // ms: 10 µs to 30 s, linger's default cap
	)
	width, height := left+plotW+20, top+len(rows)*rowH+36
	xOf := func(ms float64) float64 {
		ms = math.Min(math.Max(ms, lo), hi)
		return left + plotW*math.Log10(ms/lo)/math.Log10(hi/lo)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart hold" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`,
		width, height, width, height)
	fmt.Fprintf(&b, `<title>server hold time per trial, %s</title>`, esc(path))
	fmt.Fprintf(&b, `<text x="10" y="16" class="t">Server hold time per trial · %s</text>`, esc(path))
	fmt.Fprintf(&b, `<text x="10" y="29" class="s">from the owner's Close to the socket's release, log scale; bar: median</text>`)
	for _, t := range []struct {
		ms    float64
		label string
	}{{0.01, "10µs"}, {0.1, "100µs"}, {1, "1ms"}, {10, "10ms"}, {100, "100ms"}, {1000, "1s"}, {10000, "10s"}} {
		x := xOf(t.ms)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" class="grid"/>`, x, x, top-4, top+len(rows)*rowH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="ax" text-anchor="middle">%s</text>`, x, top+len(rows)*rowH+14, t.label)
	}
	for i, rw := range rows {
		y := top + i*rowH + rowH/2
		if i%2 == 0 {
			fmt.Fprintf(&b, `<rect x="0" y="%d" width="%d" height="%d" class="band"/>`, top+i*rowH, width, rowH)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="ax" text-anchor="end">%s · %s</text>`, left-8, y+4, esc(rw.scenario), esc(rw.strategy))
		col := strategyColors[rw.strategy]
		for k, ms := range rw.samples {
			// A deterministic jitter spreads equal values over the row.
			jy := float64(y) + float64((k*7)%11-5)*0.6
			fmt.Fprintf(&b, `<circle class="dot" cx="%.1f" cy="%.1f" r="2" fill="%s"/>`, xOf(ms), jy, col)
		}
		if len(rw.samples) > 0 {
			s := slices.Clone(rw.samples)
			slices.Sort(s)
			x := xOf(quantile.NearestRank(s, 0.5))
			fmt.Fprintf(&b, `<line class="median" x1="%.1f" x2="%.1f" y1="%d" y2="%d"><title>%s %s: median %s, p99 %s</title></line>`,
				x, x, y-7, y+7, esc(rw.scenario), esc(rw.strategy), fmtMs(quantile.NearestRank(s, 0.5)), fmtMs(quantile.NearestRank(s, 0.99)))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func esc(s string) string { return template.HTMLEscapeString(s) }

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"ms":    fmtMs,
	"bytes": func(c Cell) string { return bytesize.Format(c.DiscardedBytes / int64(max(c.Trials, 1))) },
	"reach": func(c Cell) string { return reachedText(&c) },
	"rst": func(c Cell) string {
		if c.ServerRSTs == nil {
			return "–"
		}
		return fmt.Sprintf("%d (%d)", *c.ServerRSTs, *c.ServerAbortOnClose)
	},
	"top":  func(c Cell) string { return topError(&c) },
	"cell": func(row matrixRow, s string) *Cell { return row.Cells[s] },
	"pct":  func(c *Cell) string { return fmt.Sprintf("%.0f%%", c.Rate()*100) },
	"good": func(c *Cell) string {
		switch r := c.Rate(); {
		case r >= 0.99:
			return "good"
		case r >= 0.5:
			return "mid"
		default:
			return "bad"
		}
	},
	"color": func(s string) string { return strategyColors[s] },
	"deref": func(p *int) int { return *p },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>linger lab</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;padding:0 16px;color:#1d2330}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
.meta{color:#556;font-size:13px} code{background:#f2f3f7;padding:1px 4px;border-radius:3px}
.charts{display:flex;flex-wrap:wrap;gap:10px 26px}
svg .t{font-weight:600;font-size:13px;fill:#1d2330} svg .s{font-size:11px;fill:#667}
svg .ax{font-size:11px;fill:#445} svg .grid{stroke:#e3e5ec;stroke-width:1}
svg .reach{stroke:#1d2330;stroke-width:2} svg .median{stroke:#1d2330;stroke-width:2}
svg .reachbar{fill:none;stroke-width:1.2;stroke-dasharray:3 2} svg .zero{font-size:10px;font-weight:700;fill:#1d2330}
.legend i.reachbox{border:1.2px dashed #667;background:none;margin-right:2px} .legend b.zero{font-size:11px;margin-right:4px}
svg .dot{fill-opacity:.45} svg .band{fill:#f6f7fa}
.legend{display:flex;gap:16px;margin:6px 0 10px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px;border-radius:2px}
.legend i.tick{height:2px;background:#1d2330;vertical-align:3px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 14px} th,td{padding:3px 8px;border-bottom:1px solid #e6e8ee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} th{background:#f4f5f8}
td.good{background:#e3f4f1} td.mid{background:#fdf3dc} td.bad{background:#fae3e6}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:13px} dt{font-weight:600}
</style></head><body>
<h1>linger lab</h1>
<div class="meta">{{.R.Started.Format "2006-01-02 15:04 UTC"}} · <code>{{.R.Command}}</code> · {{printf "%.0f" .R.Seconds}} s ·
{{.R.Host.OS}}/{{.R.Host.Arch}}, Linux {{.R.Host.Kernel}}, {{.R.Host.CPUs}} CPUs, {{.R.Host.Go}}{{if .R.Host.Root}}, root{{end}}</div>
{{range .R.Notes}}<p class="meta">note: {{.}}</p>{{end}}
{{with .R.Check}}<p><b>check: {{if .OK}}ok{{else}}FAILED{{end}}</b> ({{.Checked}} cells checked){{range .Failures}}<br>{{.}}{{end}}</p>{{end}}

<h2>Did the client get the server's last word?</h2>
<p>Share of trials in which the client application reported the server's TLS alert first (rejection scenarios),
got all 4 MiB and a clean end (midstream) or got the 413 (http413), per server close strategy.
A dashed box up to a black tick marks the further share in which it at least reached the client (readable in its socket,
or read by its TLS layer) without being reported, where the lab can tell. A bold 0 is a measured zero; a strategy not run has no bar.</p>
{{if .GoHTTP}}<p class="meta">{{.GoHTTP}}</p>{{end}}
{{.Legend}}
<div class="charts">{{range .Delivery}}{{.}}{{end}}</div>

<h2>How long did the server hold its sockets?</h2>
<div class="charts">{{range .Hold}}{{.}}{{end}}</div>

<h2>Summary</h2>
<table><tr><th>network</th><th>scenario</th><th>client</th>{{range .Strategies}}<th>{{.}}</th>{{end}}</tr>
{{range $row := .Rows}}<tr><td>{{$row.Path}}</td><td>{{$row.Scenario}}</td><td>{{$row.Client}}</td>
{{range $.Strategies}}{{with cell $row .}}<td class="n {{good .}}">{{.Success}}/{{.Trials}}{{if and .Reached (ne (deref .Reached) .Success)}} <span class="meta">({{deref .Reached}})</span>{{end}}</td>{{else}}<td></td>{{end}}{{end}}</tr>
{{end}}</table>

<h2>Every cell</h2>
<table><tr><th>network</th><th>scenario</th><th>client</th><th>server close</th><th>success</th><th>reached</th>
<th>server RSTs (abort on close)</th><th>hold p50</th><th>hold p99</th><th>discarded/trial</th><th>most common failure</th></tr>
{{range .R.Cells}}<tr><td>{{.Path}}</td><td>{{.Scenario}}</td><td>{{.Client}}</td><td><span style="color:{{color .Strategy}}">■</span> {{.Strategy}}</td>
<td class="n">{{.Success}}/{{.Trials}}</td><td class="n">{{reach .}}</td><td class="n">{{rst .}}</td><td class="n">{{ms .Hold.P50Ms}}</td>
<td class="n">{{ms .Hold.P99Ms}}</td><td class="n">{{bytes .}}</td><td>{{top .}}</td></tr>
{{end}}</table>

<h2>What the names mean</h2>
<dl>{{range .Scenarios}}<dt>{{.ID}}</dt><dd>{{.Title}}; success: {{.Success}}</dd>{{end}}</dl>
<dl>{{range $k, $v := .Titles}}<dt>{{$k}}</dt><dd>{{$v}}</dd>{{end}}</dl>
<dl>{{range $k, $v := .Clients}}<dt>{{$k}}</dt><dd>{{$v}}</dd>{{end}}</dl>
<p class="meta">Server RSTs are the server namespace's TcpOutRsts (and TcpExtTCPAbortOnClose) over the cell; on loopback the
root namespace mixes client, server and the rest of the machine, so they are not shown. Discarded: bytes the server threw away,
unread at close (close, rst, sleep) or read and discarded (linger).</p>
</body></html>
`))
