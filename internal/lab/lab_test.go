package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
)

// TestRunLoopback runs a few small cells on loopback: the runner, the
// servers, the strategies and the Go client end to end.
func TestRunLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const trials = 4
	rep, err := Run(ctx, Options{
		Networks:   []string{"loopback"},
		Scenarios:  []string{"tls13-1m", "midstream"},
		Clients:    []string{"go-tls", "go-alert", "go-alert-h2"},
		Strategies: []string{"close", "linger"},
		Trials:     trials,
		Command:    "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	// tls13-1m: 3 clients x 2 strategies; midstream: go-tls only.
	if got := len(rep.Cells); got != 8 {
		t.Fatalf("%d cells, want 8", got)
	}
	var tb bytes.Buffer
	rep.WriteTable(&tb)
	t.Log(tb.String())
	for _, c := range rep.Cells {
		if c.Trials != trials || c.Network != "loopback" || c.ServerRSTs != nil {
			t.Errorf("%+v: want %d loopback trials without RST counts", c, trials)
		}
		// One connection per trial, so one hold sample per trial.
		if len(c.Hold.SamplesMs) != trials {
			t.Errorf("%s %s %s: %d hold samples, want %d", c.Scenario, c.Client, c.Strategy, len(c.Hold.SamplesMs), trials)
		}
		if c.Strategy == "linger" {
			if c.Success != trials {
				t.Errorf("%s %s linger: %d/%d, want all", c.Scenario, c.Client, c.Success, trials)
			}
			if c.ServerOutcomes["peer_closed"] != trials {
				t.Errorf("%s %s linger: server outcomes %v, want peer_closed for all", c.Scenario, c.Client, c.ServerOutcomes)
			}
		}
		// The slow reader loses the end of a 4 MiB response to any
		// immediate close: it is still reading when the RST comes.
		if c.Scenario == "midstream" && c.Strategy == "close" && c.Success != 0 {
			t.Errorf("midstream close: %d/%d got everything, want none", c.Success, trials)
		}
		if c.Scenario == "midstream" && c.Strategy == "linger" && c.Hold.P50Ms < 100 {
			t.Errorf("midstream linger: median hold %v ms; the slow reader takes about a second", c.Hold.P50Ms)
		}
	}
	ck := Evaluate(rep)
	if !ck.OK {
		t.Errorf("check failed: %v", ck.Failures)
	}
}

// TestRunNetns runs one impaired namespace row: the Go client uploading
// 1 MiB over 20 ms each way and 5 % loss, which loses the alert to every
// immediate close and gets it from linger.
func TestRunNetns(t *testing.T) {
	testbed.RequireRoot(t, "the namespace cells")
	if testing.Short() {
		t.Skip("skipping the namespace cells in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const trials = 8
	rep, err := Run(ctx, Options{
		Networks:   []string{"netns"},
		Scenarios:  []string{"tls13-1m"},
		Clients:    []string{"go-tls"},
		Strategies: []string{"close", "linger"},
		Trials:     trials,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Cells) != 2 {
		t.Fatalf("%d cells, want 2", len(rep.Cells))
	}
	for _, c := range rep.Cells {
		t.Logf("%s", cellLine(&c))
		if c.ServerRSTs == nil {
			t.Fatalf("%s: no RST counts in a namespace cell", c.Strategy)
		}
		switch c.Strategy {
		case "close":
			if *c.ServerAbortOnClose == 0 {
				t.Errorf("close: no TcpExtTCPAbortOnClose; the close did not abort")
			}
		case "linger":
			if c.Success != trials || *c.ServerRSTs != 0 {
				t.Errorf("linger: %d/%d, %d RSTs; want all and none", c.Success, trials, *c.ServerRSTs)
			}
		}
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); bytes.Contains(out, []byte(namePrefixForTest())) {
		t.Errorf("namespaces left behind:\n%s", out)
	}
}

// namePrefixForTest is how this process's namespaces start (testbed's
// naming: lg-PID-N-s).
func namePrefixForTest() string { return "lg-" + strconv.Itoa(os.Getpid()) + "-" }

// sampleReport is a small, fixed report for the output tests.
func sampleReport() *Report {
	ri := func(n int) *int { return &n }
	ru := func(n uint64) *uint64 { return &n }
	r := &Report{
		Schema: SchemaVersion, Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Seconds: 12.5,
		Command: "linger lab --test", Host: Host{Go: "go1.26", OS: "linux", Arch: "amd64", Kernel: "6.18", CPUs: 2, Root: true},
		Settings: Settings{Networks: []string{"loopback", "netns"}, Scenarios: []string{"tls13-1m"},
			Clients: []string{"go-tls", "curl"}, Strategies: Strategies, DelayMs: 20, LossPercent: 5},
		Notes: []string{"client openssl skipped: openssl is not installed"},
		Check: &Check{OK: true, Failures: []string{}, Checked: 3},
	}
	for _, path := range []string{"loopback", "20ms each way, 5% loss"} {
		for _, client := range []string{"go-tls", "curl"} {
			for i, s := range Strategies {
				c := Cell{Network: "loopback", Path: path, Scenario: "tls13-1m", Client: client, Strategy: s,
					Trials: 10, Parallel: 1, Success: 3 * (i + 1), Reached: ri(10),
					Hold:           newHold([]closeRecord{{held: time.Duration(i+1) * time.Millisecond}, {held: 500 * time.Millisecond}}),
					DiscardedBytes: 1 << 20, Errors: map[string]int{"connection reset": 10 - 3*(i+1)},
					ServerOutcomes: map[string]int{s: 10}, Seconds: 1}
				if s == "linger" {
					c.Success = 10
					c.Errors = map[string]int{}
				}
				if path != "loopback" {
					c.Network = "netns"
					if s != "linger" && client == "go-tls" {
						c.Success = 0 // as measured: the alert never comes first
					}
					c.ServerRSTs, c.ServerAbortOnClose = ru(12), ru(9)
				}
				r.Cells = append(r.Cells, c)
			}
		}
	}
	return r
}

// TestJSONSchema pins the JSON field names and checks that
// docs/lab-json.md documents every one of them.
func TestJSONSchema(t *testing.T) {
	rep := sampleReport()
	path := filepath.Join(t.TempDir(), "lab.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rep) {
		t.Errorf("JSON round trip changed the report")
	}
	var generic map[string]any
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	collectKeys(generic, keys)
	want := []string{
		"schema", "started", "seconds", "command", "host", "go", "os", "arch", "kernel", "cpus", "root",
		"settings", "quick", "trials", "networks", "scenarios", "clients", "strategies", "delay_ms", "loss_percent",
		"notes", "cells", "network", "path", "scenario", "client", "strategy", "parallel", "success", "reached",
		"server_rsts", "server_abort_on_close", "hold", "p50_ms", "p99_ms", "max_ms", "samples_ms",
		"discarded_bytes", "errors", "server_outcomes", "check", "ok", "failures", "checked",
	}
	for _, k := range want {
		if !keys[k] {
			t.Errorf("JSON has no field %q: a schema change needs a new SchemaVersion and docs/lab-json.md", k)
		}
		delete(keys, k)
	}
	// Map keys of errors and server_outcomes are data, not schema.
	for _, k := range []string{"connection reset", "close", "rst", "sleep", "linger"} {
		delete(keys, k)
	}
	for k := range keys {
		t.Errorf("JSON field %q is not in the pinned list (add it here and to docs/lab-json.md)", k)
	}
	doc, err := os.ReadFile("../../docs/lab-json.md")
	if err != nil {
		t.Fatalf("the schema doc: %v", err)
	}
	for _, k := range want {
		if !bytes.Contains(doc, []byte("`"+k+"`")) {
			t.Errorf("docs/lab-json.md does not document `%s`", k)
		}
	}
	if !bytes.Contains(doc, []byte(SchemaVersion)) {
		t.Errorf("docs/lab-json.md does not name the schema %s", SchemaVersion)
	}
}

func collectKeys(v any, keys map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			keys[k] = true
			collectKeys(x, keys)
		}
	case []any:
		for _, x := range v {
			collectKeys(x, keys)
		}
	}
}

func TestCheck(t *testing.T) {
	rep := sampleReport()
	// The sample's close cells succeed in 3/10 and its linger cells in
	// 10/10, but have too few trials for the curl rule.
	if ck := Evaluate(rep); !ck.OK {
		t.Errorf("sample: %v", ck.Failures)
	}
	for i := range rep.Cells {
		c := &rep.Cells[i]
		if c.Strategy == "linger" && c.Client == "curl" && c.Network == "loopback" {
			c.Success = 9
		}
		if c.Strategy == "close" && c.Client == "go-tls" && c.Network == "netns" {
			c.Success = 10
		}
	}
	ck := Evaluate(rep)
	if ck.OK || len(ck.Failures) != 2 {
		t.Errorf("want 2 failures (linger below 99%%, close no longer failing), got %v", ck.Failures)
	}
	if ck := Evaluate(&Report{}); ck.OK {
		t.Errorf("an empty report passes the check")
	}

	// Package alert's clients must report the alert on loopback whatever
	// the server's close, in both protocols.
	for _, client := range alertClients {
		rep := sampleReport()
		rep.Cells = append(rep.Cells, Cell{Network: "loopback", Path: "loopback", Scenario: "tls13-1m", Client: client,
			Strategy: "close", Trials: 10, Success: 9})
		if ck := Evaluate(rep); ck.OK || len(ck.Failures) != 1 || !strings.Contains(ck.Failures[0], client) {
			t.Errorf("%s close at 9/10 on loopback: want one failure naming it, got %v", client, ck.Failures)
		}
		rep.Cells[len(rep.Cells)-1].Network = "netns"
		if ck := Evaluate(rep); !ck.OK {
			t.Errorf("%s close at 9/10 over the lossy path: want no failure, got %v", client, ck.Failures)
		}
	}
}

// TestHTMLSelfContained checks that the page fetches nothing.
func TestHTMLSelfContained(t *testing.T) {
	b, err := sampleReport().HTML()
	if err != nil {
		t.Fatal(err)
	}
	// The only URL allowed is SVG's namespace name, which is never fetched.
	s := strings.ReplaceAll(string(b), `xmlns="http://www.w3.org/2000/svg"`, "")
	if m := regexp.MustCompile(`(https?://|<script|<link|<img|<iframe|@import|url\()`).FindString(s); m != "" {
		t.Errorf("the page refers to something outside itself: %q", m)
	}
}

// element is one element of the page, with its attributes and the class of
// the chart it is in.
type element struct {
	name, chart string
	attr        map[string]string
}

// parseHTML reads the page with encoding/xml in its lenient HTML mode, which
// fails on markup a browser would have to guess at (an unclosed SVG
// element, a stray end tag inside a chart).
func parseHTML(t *testing.T, page []byte) []element {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(page))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	var els []element
	var svgs []string // the class of each open svg
	depth := 0        // elements open inside the innermost svg
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the page does not parse: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := element{name: tok.Name.Local, attr: map[string]string{}}
			for _, a := range tok.Attr {
				e.attr[a.Name.Local] = a.Value
			}
			if e.name == "svg" {
				svgs = append(svgs, e.attr["class"])
			}
			if len(svgs) > 0 {
				e.chart = svgs[len(svgs)-1]
				depth++
			}
			els = append(els, e)
		case xml.EndElement:
			if len(svgs) > 0 {
				depth--
				if tok.Name.Local == "svg" {
					svgs = svgs[:len(svgs)-1]
				}
			}
		}
	}
	if len(svgs) != 0 || depth != 0 {
		t.Errorf("unbalanced SVG: %d charts and %d elements left open", len(svgs), depth)
	}
	return els
}

// TestHTMLStructure checks the page's charts without a browser: their
// count, a bar per cell and a dot per hold sample, a measured zero labelled
// as such, and every "reached" tick standing on a visible box.
func TestHTMLStructure(t *testing.T) {
	rep := sampleReport()
	page, err := rep.HTML()
	if err != nil {
		t.Fatal(err)
	}
	els := parseHTML(t, page)
	count := func(name, class string) (n int) {
		for _, e := range els {
			if e.name == name && e.attr["class"] == class {
				n++
			}
		}
		return n
	}
	// One delivery chart per path and scenario, one hold chart per path.
	if n := count("svg", "chart delivery"); n != 2 {
		t.Errorf("%d delivery charts, want 2", n)
	}
	if n := count("svg", "chart hold"); n != 2 {
		t.Errorf("%d hold-time charts, want 2", n)
	}
	if n := count("rect", "bar"); n != len(rep.Cells) {
		t.Errorf("%d bars, want one per cell (%d)", n, len(rep.Cells))
	}
	if n := count("circle", "dot"); n != 2*len(rep.Cells) {
		t.Errorf("%d dots, want one per hold sample (%d)", n, 2*len(rep.Cells))
	}
	zeros := 0
	for _, c := range rep.Cells {
		if c.Success == 0 {
			zeros++
		}
	}
	if n := count("text", "zero"); n != zeros || zeros == 0 {
		t.Errorf("%d zero labels, want one per cell with no success (%d, and the sample must have some)", n, zeros)
	}
	num := func(e element, k string) int {
		v, err := strconv.Atoi(e.attr[k])
		if err != nil {
			t.Fatalf("%s %s=%q: %v", e.name, k, e.attr[k], err)
		}
		return v
	}
	ticks := 0
	for i, e := range els {
		if e.name == "rect" && e.attr["class"] == "bar" && num(e, "height") < 2 {
			t.Errorf("bar %v is thinner than 2 px", e.attr)
		}
		if e.name != "line" || e.attr["class"] != "reach" {
			continue
		}
		ticks++
		// The elements before the tick in the same chart: the bar and, if
		// the tick is above it, the dashed box between them.
		var bar, box *element
		for j := i - 1; j >= 0 && (bar == nil); j-- {
			switch els[j].attr["class"] {
			case "reachbar":
				box = &els[j]
			case "bar":
				bar = &els[j]
			}
		}
		y := e.attr["y1"]
		switch {
		case bar == nil:
			t.Errorf("tick %v has no bar", e.attr)
		case box == nil:
			t.Errorf("tick at y=%s floats over the bar at y=%s with nothing under it", y, bar.attr["y"])
		case box.attr["y"] != y || num(*box, "y")+num(*box, "height") != num(*bar, "y"):
			t.Errorf("tick at y=%s, box from y=%s height %s, bar from y=%s: not stacked", y, box.attr["y"], box.attr["height"], bar.attr["y"])
		}
	}
	if ticks == 0 {
		t.Error("no reached ticks: the sample must have cells that reached more than they reported")
	}
}

// TestHTMLChromium renders the page in headless Chromium, where it is
// installed (it is optional: TestHTMLStructure checks the same without a
// browser), and checks that the charts are in the rendered DOM with their
// bars and dots. LAB_SCREENSHOT=/tmp/lab.png also takes a screenshot to
// look at.
func TestHTMLChromium(t *testing.T) {
	chromium := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			chromium = p
			break
		}
	}
	if chromium == "" {
		t.Skip("skipping the HTML render in a browser: chromium is not installed (optional; TestHTMLStructure checks the page without it)")
	}
	dir := t.TempDir()
	page := filepath.Join(dir, "lab.html")
	rep := sampleReport()
	if err := rep.WriteHTML(page); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=" + filepath.Join(dir, "profile")}
	out, err := exec.CommandContext(ctx, chromium, append(args, "--dump-dom", "file://"+page)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	dom := string(out)
	count := func(re string) int { return len(regexp.MustCompile(re).FindAllString(dom, -1)) }
	// One delivery chart per path and scenario, one hold chart per path.
	if n := count(`<svg class="chart delivery"`); n != 2 {
		t.Errorf("%d delivery charts in the rendered DOM, want 2", n)
	}
	if n := count(`<svg class="chart hold"`); n != 2 {
		t.Errorf("%d hold-time charts in the rendered DOM, want 2", n)
	}
	if n := count(`<rect class="bar"`); n != len(rep.Cells) {
		t.Errorf("%d bars, want one per cell (%d)", n, len(rep.Cells))
	}
	if n := count(`<circle class="dot"`); n != 2*len(rep.Cells) {
		t.Errorf("%d dots, want one per hold sample (%d)", n, 2*len(rep.Cells))
	}
	if os.Getenv("LAB_SCREENSHOT") != "" {
		// For a person to look at: LAB_SCREENSHOT=/tmp/lab.png go test -run Chromium
		shot := os.Getenv("LAB_SCREENSHOT")
		cmd := exec.CommandContext(ctx, chromium, append(args, "--window-size=1280,1800", "--screenshot="+shot, "file://"+page)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("screenshot: %v\n%s", err, out)
		}
	}
}

// TestTableExplains: under the tables, the terminal output says what each
// strategy is and what success means, and explains the stock net/http
// client's row where there is one.
func TestTableExplains(t *testing.T) {
	rep := sampleReport()
	var b strings.Builder
	rep.WriteTable(&b)
	for _, s := range Strategies {
		if !strings.Contains(b.String(), StrategyTitles[s]) {
			t.Errorf("the table does not explain strategy %s", s)
		}
	}
	if !strings.Contains(b.String(), "tls13-1m   alert reported first") {
		t.Errorf("the table does not say what success is:\n%s", b.String())
	}
	if strings.Contains(b.String(), "go-http, the stock") {
		t.Errorf("the go-http note without a go-http row:\n%s", b.String())
	}
	rep.Cells[0].Client = "go-http"
	b.Reset()
	rep.WriteTable(&b)
	if !strings.Contains(b.String(), "go-http, the stock") {
		t.Errorf("no note for the go-http row:\n%s", b.String())
	}
}

// TestTableFits: the terminal table fits 100 columns, starts with the
// verdict, and shows the stock net/http clients apart from the others.
func TestTableFits(t *testing.T) {
	rep := sampleReport()
	rep.Cells = append(rep.Cells, rep.Cells[0])
	rep.Cells[len(rep.Cells)-1].Client = "go-http-h2"
	var b strings.Builder
	rep.WriteTable(&b)
	out := b.String()
	if !strings.HasPrefix(out, "\nverdict: linger delivered in ") {
		t.Errorf("the output does not start with the verdict:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if len(line) > 100 && !strings.HasPrefix(line, "verdict:") {
			t.Errorf("%d columns: %q", len(line), line)
		}
	}
	i, j := strings.Index(out, "go-http-h2"), strings.Index(out, "Stock net/http clients")
	if i < 0 || j < 0 || i < j {
		t.Errorf("go-http-h2 is not shown apart, under the stock clients' heading:\n%s", out)
	}
}
