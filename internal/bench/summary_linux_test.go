//go:build linux

package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestBound(t *testing.T) {
	for _, tc := range []struct {
		b    bound
		v    float64
		met  bool
		text string
	}{
		{atLeast(0.97, "x"), 0.97, true, "≥ 0.97x"},
		{atLeast(0.97, "x"), 0.969, false, "≥ 0.97x"},
		{atMost(1.05, "x"), 1.05, true, "≤ 1.05x"},
		{atMost(1.05, "x"), 1.051, false, "≤ 1.05x"},
		{atMost(256, " B"), 164, true, "≤ 256 B"},
		{atLeast(50, "x"), 79.9, true, "≥ 50x"},
		{atMost(1, "x"), 1.43, false, "≤ 1.00x"},
		{atLeast(0.9, "x"), 0.9, true, "≥ 0.90x"},
		{atLeast(99, " %"), 98.9, false, "≥ 99 %"},
	} {
		if got := tc.b.met(tc.v); got != tc.met {
			t.Errorf("%v met(%v) = %v, want %v", tc.b, tc.v, got, tc.met)
		}
		if got := tc.b.String(); got != tc.text {
			t.Errorf("String() = %q, want %q", got, tc.text)
		}
	}
}

// happyRun is one client's measurements in happyOrder, rate and p99 of
// plain and linger given per round as {plain first, linger, linger,
// plain last}.
func happyRun(client string, rates, p99s [][4]float64) []HappyResult {
	var rs []HappyResult
	for i := range rates {
		for slot, mode := range happyOrder {
			rs = append(rs, HappyResult{Client: client, Mode: mode, Round: i + 1, Slot: slot, Requests: 1000,
				PerSec: rates[i][slot], P99: time.Duration(p99s[i][slot] * 1e6), ServerCPU: 300 * time.Millisecond,
				Wall: 2 * time.Second, ClientCPU: time.Second})
		}
	}
	return rs
}

func TestHappyRatios(t *testing.T) {
	// The second pair of a round is linger first: its ratio must still be
	// linger/plain.
	rs := happyRun("wrk-close", [][4]float64{{1000, 900, 1200, 1000}}, [][4]float64{{10, 11, 10, 8}})
	st := happyRatios(rs, 2)
	if len(st) != 1 {
		t.Fatalf("%d clients, want 1", len(st))
	}
	want := []float64{0.9, 1.2}
	wantP99 := []float64{1.1, 1.25}
	for i := range want {
		if math.Abs(st[0].PerSec[i]-want[i]) > 1e-9 || math.Abs(st[0].P99[i]-wantP99[i]) > 1e-9 {
			t.Errorf("pair %d: requests/s %v, p99 %v; want %v, %v", i, st[0].PerSec[i], st[0].P99[i], want[i], wantP99[i])
		}
	}
	if st[0].ClientBusy != 0.5 {
		t.Errorf("client busy %v, want 0.5", st[0].ClientBusy)
	}
	if s := spread([]float64{3, 1, 2, 10}); s.Median != 2.5 || s.Min != 1 || s.Max != 10 {
		t.Errorf("spread = %+v, want median 2.5, 1, 10", s)
	}
}

// findRow returns the row whose What contains what.
func findRow(rows []TargetRow, what string) (TargetRow, bool) {
	for _, r := range rows {
		if strings.Contains(r.What, what) {
			return r, true
		}
	}
	return TargetRow{}, false
}

func TestSummarize(t *testing.T) {
	held := []HeldResult{
		{Mode: "loop", N: 15000, GoPerConn: 164, RSSPerConn: 310, SlabPerConn: 7700},
		{Mode: "naive", N: 15000, GoPerConn: 13110, RSSPerConn: 6600, SlabPerConn: 7800},
	}
	heavyLoop := []HeldResult{{Mode: "loop", N: 1000, GoPerConn: 400, RSSPerConn: 1300}, {Mode: "naive", N: 1000, GoPerConn: 13000, RSSPerConn: 6600}}
	flood := func(kind, mode string, perSec float64, cpu time.Duration, maxL int, alerts int64) FloodResult {
		return FloodResult{Clients: kind, Mode: mode, PerSec: perSec, Rejected: 1000, CPU: cpu, Cap: 32, MaxLingering: maxL,
			Client: floodCounts{Handshakes: 1000, Alerts: alerts}}
	}
	floods := []FloodResult{
		flood("upload-1k", "plain", 1000, 600*time.Millisecond, 0, 1000),
		flood("upload-1k", "linger", 960, 630*time.Millisecond, 32, 1000),
		flood("deaf", "plain", 1000, 800*time.Millisecond, 0, 0),
		flood("deaf", "linger", 800, 1100*time.Millisecond, 32, 0),
		flood("upload-1m", "plain", 500, 800*time.Millisecond, 0, 780),
		flood("upload-1m", "linger", 480, 850*time.Millisecond, 20, 995),
		flood("cooperative", "plain", 500, 800*time.Millisecond, 0, 1000),
		flood("cooperative", "linger", 480, 850*time.Millisecond, 32, 1000),
		flood("upload-4k", "plain", 500, 800*time.Millisecond, 0, 1000),
		flood("upload-4k", "linger", 400, 850*time.Millisecond, 10, 1000),
		flood("upload-16k", "linger-nopressure", 400, 850*time.Millisecond, 10, 1000),
	}
	happyRs := append(happyRun("wrk-keepalive", [][4]float64{{100, 99, 99, 100}, {100, 98, 97, 100}}, [][4]float64{{5, 5, 5, 5}, {5, 5, 5, 5}}),
		happyRun("wrk-close", [][4]float64{{100, 90, 90, 100}, {100, 95, 95, 100}}, [][4]float64{{5, 6, 6, 5}, {5, 6, 6, 5}})...)

	type want struct {
		what, status string
		value        float64
	}
	for _, tc := range []struct {
		name  string
		in    summaryInput
		rows  []want
		notes []string // each a substring of some note
		nrows int
	}{
		{
			name:  "nothing ran",
			in:    summaryInput{},
			notes: []string{"held did not run", "hold did not run", "flood did not run", "happy did not run", "perf_lifecycle.sh"},
		},
		{
			name: "held",
			in:   summaryInput{held: held},
			rows: []want{
				{"Go memory (heap + stacks) per lingering socket", statusMet, 164},
				{"Go memory per socket, naive/loop", statusMet, 13110.0 / 164},
				{"RSS per socket", statusReported, 310},
				{"kernel slab per socket", statusReported, 3850},
				{"Go memory + kernel slab", statusReported, 164 + 3850},
				{"RSS + kernel slab", statusReported, 310 + 3850},
			},
			nrows: 6,
		},
		{
			name:  "held, too much memory and no slab (not root)",
			in:    summaryInput{held: heavyLoop},
			rows:  []want{{"per lingering socket", statusNotMet, 400}, {"naive/loop", statusNotMet, 32.5}},
			notes: []string{"needs root"},
			nrows: 3,
		},
		{
			name:  "held without naive",
			in:    summaryInput{held: held[:1]},
			notes: []string{"held needs the modes loop and naive"},
		},
		{
			name:  "hold, slower than the goroutine",
			in:    summaryInput{hold: []HoldResult{{Mode: "loop", N: 5000, P50: 352 * time.Microsecond}, {Mode: "naive", N: 5000, P50: 247 * time.Microsecond}}},
			rows:  []want{{"hold p50", statusNotMet, 352.0 / 247}},
			nrows: 1,
		},
		{
			name: "hold, with the server's CPU",
			in: summaryInput{hold: []HoldResult{
				{Mode: "loop", N: 5000, At: 1, P50: 40 * time.Microsecond, CPU: 82 * time.Microsecond},
				{Mode: "naive", N: 5000, At: 1, P50: 36 * time.Microsecond, CPU: 95 * time.Microsecond},
			}},
			rows:  []want{{"hold p50", statusNotMet, 40.0 / 36}, {"server CPU per connection, loop/naive, 5,000 connections, 1 at a time", statusMet, 82.0 / 95}},
			nrows: 2,
		},
		{
			name:  "hold, at most the goroutine's",
			in:    summaryInput{hold: []HoldResult{{Mode: "loop", N: 5000, P50: 31 * time.Microsecond}, {Mode: "naive", N: 5000, P50: 40 * time.Microsecond}}},
			rows:  []want{{"hold p50", statusMet, 31.0 / 40}},
			nrows: 1,
		},
		{
			name:  "hold without matches",
			in:    summaryInput{hold: []HoldResult{{Mode: "loop"}, {Mode: "naive"}}},
			notes: []string{"hold needs the modes loop and naive"},
		},
		{
			name: "flood",
			in:   summaryInput{flood: floods},
			rows: []want{
				{"upload-1k: rejected", statusMet, 0.96},
				{"upload-1k: server CPU", statusMet, 1.05},
				{"deaf: rejected", statusNotMet, 0.80},
				{"deaf: server CPU", statusNotMet, 1.375},
				{"upload-1m: rejected", statusMet, 0.96},
				{"upload-1m, below the cap", statusMet, 99.5},
				{"cooperative: rejected", statusMet, 0.96},
				{"upload-4k: rejected", statusReported, 0.8},
			},
			// Cooperative clients reached the cap: no alert row, a note.
			notes: []string{"flood cooperative: the alert in ≥ 99 % of handshakes applies below the cap", "flood upload-16k: needs the modes plain and linger"},
			nrows: 2 + 2 + 3 + 2 + 2,
		},
		{
			// The rate's ratio is the median of the rounds' own ratios
			// (0.9 and 1.1), not the ratio of the averages (725/750); a
			// mode other than plain and linger gets a note.
			name: "flood, rounds and other modes",
			in: summaryInput{flood: func() []FloodResult {
				var rs []FloodResult
				for i, m := range []struct {
					mode   string
					perSec float64
				}{{"plain", 1000}, {"linger", 900}, {"linger-nopressure", 800}, {"plain", 500}, {"linger", 550}, {"linger-nopressure", 400}} {
					r := flood("upload-1k", m.mode, m.perSec, 600*time.Millisecond, 0, 1000)
					if m.mode == "linger" {
						r.CPU = 630 * time.Millisecond
					}
					r.Round = 1 + i/3
					rs = append(rs, r)
				}
				return rs
			}()},
			rows:  []want{{"upload-1k: rejected", statusMet, 1.0}, {"upload-1k: server CPU", statusMet, 1.05}},
			notes: []string{"flood mode linger-nopressure: printed with the flood above, not summarized"},
			nrows: 2,
		},
		{
			// The samples missed the peak, the outcomes did not.
			name: "flood, cap reached between samples",
			in: summaryInput{flood: []FloodResult{
				flood("upload-1m", "plain", 500, 800*time.Millisecond, 0, 780),
				func() FloodResult {
					r := flood("upload-1m", "linger", 480, 850*time.Millisecond, 2, 700)
					r.Outcomes = map[string]uint64{"released": 15, "budget": 278}
					return r
				}(),
			}},
			rows:  []want{{"upload-1m: rejected", statusMet, 0.96}},
			notes: []string{"which this run reached (at most 2 lingering of 32 sampled, 15 released to make room"},
			nrows: 2,
		},
		{
			name: "happy, one client missing",
			in:   summaryInput{happy: happyRs},
			rows: []want{
				{"wrk-keepalive: requests/s", statusMet, 0.985},
				{"wrk-keepalive: p99", statusMet, 1},
				{"wrk-close: requests/s", statusNotMet, 0.925},
				{"wrk-close: p99", statusNotMet, 1.2},
			},
			notes: []string{"happy h2load: not measured"},
			nrows: 4,
		},
		{
			name:  "happy, nothing measured",
			in:    summaryInput{happy: []HappyResult{}},
			notes: []string{"happy wrk-keepalive: not measured", "happy wrk-close: not measured", "happy h2load: not measured"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, notes := summarize(tc.in)
			if len(rows) != tc.nrows {
				t.Errorf("%d rows, want %d: %+v", len(rows), tc.nrows, rows)
			}
			for _, w := range tc.rows {
				r, ok := findRow(rows, w.what)
				if !ok {
					t.Errorf("no row %q in %+v", w.what, rows)
					continue
				}
				if r.Status != w.status || math.Abs(r.Value-w.value) > 1e-6 {
					t.Errorf("row %q: %s, value %v; want %s, %v", r.What, r.Status, r.Value, w.status, w.value)
				}
				if r.Measured == "" || r.Baseline == "" {
					t.Errorf("row %q: measured %q, baseline %q: both must say something", r.What, r.Measured, r.Baseline)
				}
			}
			all := strings.Join(notes, "\n")
			for _, n := range tc.notes {
				if !strings.Contains(all, n) {
					t.Errorf("no note saying %q in:\n%s", n, all)
				}
			}
			if !strings.Contains(all, "perf_lifecycle.sh") {
				t.Errorf("no note giving the lifecycle command in:\n%s", all)
			}
		})
	}
}

// TestNewSummary: the summary finds each benchmark's results by their
// type, prints a markdown table that says where it was measured, and goes
// into the JSON.
func TestNewSummary(t *testing.T) {
	m := Machine{CPUs: 2, Model: "AMD EPYC", Kernel: "6.18", Go: "go1.26.8", Load: "1.00 0.50 0.25", LoadEnd: "2.00 1.00 0.50"}
	res := map[string]any{
		"machine": m,
		"hold":    []HoldResult{{Mode: "loop", N: 400, P50: 100 * time.Microsecond}, {Mode: "naive", N: 400, P50: 200 * time.Microsecond}},
		"pin":     []PinResult{},
	}
	s := newSummary("linger bench -smoke hold", true, m, 3*time.Second, res)
	if len(s.Targets) != 1 || s.Targets[0].Status != statusMet {
		t.Fatalf("targets %+v, want the hold row, met", s.Targets)
	}
	var out bytes.Buffer
	printSummary(&out, s)
	for _, want := range []string{
		"`linger bench -smoke hold`: 2 CPUs (AMD EPYC), Linux 6.18, go1.26.8, 3s; load average 1.00 0.50 0.25 at the start, 2.00 1.00 0.50 at the end",
		"Smoke sizes",
		"| benchmark | what | target | measured | baseline, same run | met |",
		"| hold | hold p50 from the peer's FIN to the release, loop/naive, 400 connections | ≤ 1.00x | 100 µs (0.50x) | naive 200 µs | met |",
		"- memory per socket: held did not run",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"status":"met"`, `"loadavg_end":"2.00 1.00 0.50"`, `"smoke":true`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
}
