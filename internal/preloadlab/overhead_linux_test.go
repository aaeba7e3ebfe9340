package preloadlab

import (
	"context"
	"flag"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/bench"
	"github.com/linger-go/linger/internal/testbed"
)

// The overhead of the preload, measured, comes from
//
//	go test ./internal/preloadlab -run TestOverhead -v -timeout 20m -args -overhead [-rounds 5] [-duration 5s] [-conns 16]
//
// as root; without -overhead it runs one short round as a check that the
// measurement works (no assertion on the ratios: the machine is shared).
var (
	overheadFlag     = flag.Bool("overhead", false, "TestOverhead: measure, and check the targets")
	overheadRounds   = flag.Int("rounds", 5, "TestOverhead: rounds, each stock, preloaded, preloaded, stock")
	overheadDuration = flag.Duration("duration", 5*time.Second, "TestOverhead: each wrk run")
	overheadConns    = flag.Int("conns", 16, "TestOverhead: wrk's connections")
)

// The targets for the preloaded server against the stock one.
const (
	minRateRatio = 0.98
	maxP99Ratio  = 1.05
)

// TestOverhead runs wrk (one thread) against two nginx servers, one stock
// and one under liblinger.so, side by side on loopback, HTTPS, keep-alive
// and with Connection: close (a handshake and a lingering close per
// request), in rounds of stock, preloaded, preloaded, stock so that a drift
// of the machine's load falls on both alike. It prints each run and the
// ratios of the preloaded server's requests/s and p99 to the stock one's.
func TestOverhead(t *testing.T) {
	testbed.RequireRoot(t, "the overhead measurement (nginx as root)")
	testbed.CheckFDs(t)
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("skipping the overhead measurement: wrk is not installed (./test.sh installs it)")
	}
	rounds, d, conns := 1, time.Second, 4
	if *overheadFlag {
		rounds, d, conns = *overheadRounds, *overheadDuration, *overheadConns
	}
	ca := testbed.SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	libDir := t.TempDir()
	servers := map[string]*testbed.RealServer{
		"stock": testbed.RunRealServer(t, testbed.RealServerConfig{Kind: "nginx", Files: files, Host: "127.0.0.1"}),
		"preloaded": testbed.RunRealServer(t, testbed.RealServerConfig{Kind: "nginx", Files: files, Dir: libDir, Host: "127.0.0.1",
			// Counters once a second, not a line per connection: the
			// cost measured is the library's, not its log's.
			Env: testbed.PreloadEnv(t, libDir, "LINGER_LOG_SUMMARY=1")}),
	}
	type run struct {
		client, server string
		round          int
		r              bench.HappyResult
	}
	var runs []run
	clients := []struct {
		name string
		args []string
	}{{"wrk keep-alive", nil}, {"wrk Connection: close", []string{"-H", "Connection: close"}}}
	for _, cl := range clients {
		for round := 0; round < rounds; round++ {
			for _, server := range []string{"stock", "preloaded", "preloaded", "stock"} {
				args := append([]string{"-t1", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(int(d/time.Second)) + "s", "--latency"}, cl.args...)
				ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
				out, err := exec.CommandContext(ctx, "wrk", append(args, "https://"+servers[server].Addr+"/")...).CombinedOutput()
				cancel()
				if err != nil {
					t.Fatalf("wrk: %v: %s", err, out)
				}
				r, err := bench.ParseWrk(out)
				if err != nil {
					t.Fatalf("wrk: %v: %s", err, out)
				}
				if r.Errors > 0 || r.Requests == 0 {
					t.Errorf("%s against %s nginx: %d requests, %d errors", cl.name, server, r.Requests, r.Errors)
				}
				runs = append(runs, run{cl.name, server, round, r})
			}
		}
	}
	fmt.Printf("\n%s, stock vs under liblinger.so, loopback HTTPS, wrk -t1 -c%d -d%s, %d rounds of stock, preloaded, preloaded, stock (shared, loaded machine)\n\n",
		servers["stock"].Version, conns, d, rounds)
	fmt.Println("| client | server | round | requests/s | p50 | p99 |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, r := range runs {
		fmt.Printf("| %s | %s | %d | %.0f | %v | %v |\n", r.client, r.server, r.round+1, r.r.PerSec, r.r.P50, r.r.P99)
	}
	fmt.Println()
	fmt.Println("| client | requests/s, preloaded / stock (target >= 0.98) | p99, preloaded / stock (target <= 1.05) |")
	fmt.Println("| --- | --- | --- |")
	for _, cl := range clients {
		// Each round's ratio of its two preloaded runs to its two stock
		// runs; the median over rounds.
		var rate, p99 []float64
		for round := 0; round < rounds; round++ {
			var sum [2]float64
			var lat [2]float64
			for _, r := range runs {
				if r.client != cl.name || r.round != round {
					continue
				}
				i := 0
				if r.server == "preloaded" {
					i = 1
				}
				sum[i] += r.r.PerSec
				lat[i] += float64(r.r.P99)
			}
			rate = append(rate, sum[1]/sum[0])
			p99 = append(p99, lat[1]/lat[0])
		}
		mr, mp := median(rate), median(p99)
		fmt.Printf("| %s | %.3f %s (rounds: %s) | %.3f %s (rounds: %s) |\n", cl.name, mr, met(mr >= minRateRatio), fmtRatios(rate),
			mp, met(mp <= maxP99Ratio), fmtRatios(p99))
		if *overheadFlag && (mr < minRateRatio || mp > maxP99Ratio) {
			t.Logf("%s: a target is not met (see the table)", cl.name)
		}
	}
	fmt.Printf("\nliblinger.so's log (the preloaded nginx): %s\n", testbed.CountsText(testbed.PreloadOutcomes(libDir)))
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func fmtRatios(v []float64) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%.3f", x)
	}
	return s
}
