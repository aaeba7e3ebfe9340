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
//	go test ./internal/preloadlab -run TestOverhead -v -timeout 30m -args -overhead [-pairs 60] [-duration 1s] [-conns 16] [-log none]
//
// as root; without -overhead it runs one short pair as a check that the
// measurement works (no assertion on the ratios: the machine is shared).
var (
	overheadFlag     = flag.Bool("overhead", false, "TestOverhead: measure, and check the targets")
	overheadPairs    = flag.Int("pairs", 60, "TestOverhead: pairs of runs, one stock and one preloaded, per load")
	overheadDuration = flag.Duration("duration", time.Second, "TestOverhead: each wrk run (whole seconds)")
	overheadConns    = flag.Int("conns", 16, "TestOverhead: wrk's connections")
	overheadLog      = flag.String("log", "summary", "TestOverhead: the preloaded server's log: summary (LINGER_LOG_SUMMARY=1, counters once a second) or none (the library's default)")
)

// The targets for the preloaded server against the stock one.
const (
	minRateRatio = 0.98
	maxP99Ratio  = 1.05
)

// TestOverhead runs wrk (one thread) against two nginx servers, one stock
// and one under liblinger.so, side by side on loopback, HTTPS, keep-alive
// and with Connection: close (a handshake and a lingering close per
// request). Both servers are pinned to one CPU (and with them the
// library's thread, which inherits the affinity of the thread that starts
// it) and wrk to another (testbed.PinForLoad). The runs come in pairs,
// one against each server, whose order alternates from pair to pair; a
// pair's ratios are its preloaded run's requests/s and p99 over its stock
// run's.
//
// Each run also reads the server's CPU time (testbed.Threads, the
// library's thread included) and divides it by the run's requests: with
// the server's CPU saturated that is the inverse of its rate, without the
// time the VM's host took the CPU away, and so a steadier reading of the
// same cost. On loopback some of a connection's kernel work runs on
// whichever side's CPU sends the packet that causes it: the stock server's
// socket, orphaned by its close, is freed when wrk's RST arrives, in wrk's
// system call, where the library's duplicate is freed by the library's
// close, on the server's CPU. So the test also adds wrk's CPU time (user
// and system, from its rusage) to the server's: the whole exchange's CPU a
// request on this host.
//
// Per thread, the same readings give the library's thread's CPU time and
// wake-ups a request, and how often nginx's own thread was preempted (for
// the library's, on the CPU they share): where the excess goes.
//
// Many short pairs rather than a few long rounds, because this VM's speed
// drifts by tens of percent from one run to the next, more than the
// difference measured: a drift slower than a pair falls on both of its
// runs alike, and the spread of the pairs' ratios gives the mean's 95 %
// interval.
func TestOverhead(t *testing.T) {
	testbed.RequireRoot(t, "the overhead measurement (nginx as root)")
	testbed.CheckFDs(t)
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("skipping the overhead measurement: wrk is not installed (./test.sh installs it)")
	}
	pairs, d, conns := 1, time.Second, 4
	if *overheadFlag {
		pairs, d, conns = *overheadPairs, *overheadDuration, *overheadConns
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	ca := testbed.SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	libDir := t.TempDir()
	// Counters once a second, not a line per connection: the cost
	// measured is the library's, not its log's. Without a log (the
	// library's default) it also skips the SIOCOUTQ that only the log
	// reads; the library's thread in nginx's worker is then the evidence
	// that it took the closes over.
	var env []string
	switch *overheadLog {
	case "summary":
		env = testbed.PreloadEnv(t, libDir, "LINGER_LOG_SUMMARY=1")
	case "none":
		env = []string{"LD_PRELOAD=" + testbed.LibLinger(t)}
	default:
		t.Fatalf("-log %q: want summary or none", *overheadLog)
	}
	servers := map[string]*testbed.RealServer{
		"stock":     testbed.RunRealServer(t, testbed.RealServerConfig{Kind: "nginx", Files: files, Host: "127.0.0.1"}),
		"preloaded": testbed.RunRealServer(t, testbed.RealServerConfig{Kind: "nginx", Files: files, Dir: libDir, Host: "127.0.0.1", Env: env}),
	}
	client := testbed.PinForLoad(t, servers["stock"].PID, servers["preloaded"].PID)
	clients := []struct {
		name string
		args []string
	}{{"wrk keep-alive", nil}, {"wrk Connection: close", []string{"-H", "Connection: close"}}}
	// wrk returns its result, what the server's threads did meanwhile, and
	// wrk's own CPU time.
	usage := func(server string) use {
		ts, err := testbed.Threads(servers[server].PID)
		if err != nil {
			t.Fatal(err)
		}
		return useOf(ts)
	}
	wrk := func(server string, args []string) (bench.HappyResult, use, time.Duration) {
		u0 := usage(server)
		cmd := testbed.Taskset(client, "wrk", append(append([]string{"-t1", "-c" + strconv.Itoa(conns), "-d" + strconv.Itoa(secs) + "s", "--latency"}, args...),
			"https://"+servers[server].Addr+"/")...)
		ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("wrk: %v: %s", err, out)
		}
		r, err := bench.ParseWrk(out)
		if err != nil {
			t.Fatalf("wrk: %v: %s", err, out)
		}
		if r.Errors > 0 || r.Requests == 0 {
			t.Errorf("against %s nginx: %d requests, %d errors", server, r.Requests, r.Errors)
		}
		return r, usage(server).minus(u0), c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	fmt.Printf("\n%s, stock vs under liblinger.so, loopback HTTPS, wrk -t1 -c%d -d%ds (servers and wrk pinned apart: %v), %d pairs of runs per load\n\n",
		servers["stock"].Version, conns, secs, client >= 0, pairs)
	var rows []string
	for _, cl := range clients {
		var rate, p99, cpu, both, stockRate, preRate, stockCPU, preCPU []float64
		var libCPU, libWakes, stockPreempted, prePreempted []float64
		for pair := range pairs {
			order := []string{"stock", "preloaded"}
			if pair%2 == 1 {
				order = []string{"preloaded", "stock"}
			}
			got := map[string]bench.HappyResult{}
			perReq, bothReq := map[string]float64{}, map[string]float64{}
			for _, server := range order {
				r, u, wrkCPU := wrk(server, cl.args)
				n := float64(max(r.Requests, 1))
				got[server], perReq[server], bothReq[server] = r, float64(u.cpu)/n, float64(u.cpu+wrkCPU)/n
				if server == "stock" {
					stockPreempted = append(stockPreempted, float64(u.preempted)/n)
				} else {
					prePreempted = append(prePreempted, float64(u.preempted)/n)
					libCPU, libWakes = append(libCPU, float64(u.lib)/n), append(libWakes, float64(u.libWakes)/n)
				}
			}
			st, pre := got["stock"], got["preloaded"]
			stockCPU, preCPU = append(stockCPU, perReq["stock"]), append(preCPU, perReq["preloaded"])
			cpu = append(cpu, perReq["preloaded"]/perReq["stock"])
			both = append(both, bothReq["preloaded"]/bothReq["stock"])
			stockRate, preRate = append(stockRate, st.PerSec), append(preRate, pre.PerSec)
			rate = append(rate, pre.PerSec/st.PerSec)
			p99 = append(p99, float64(pre.P99)/float64(st.P99))
		}
		fmt.Printf("%s: requests/s, stock:     %s\n", cl.name, testbed.RatesText(stockRate))
		fmt.Printf("%s: requests/s, preloaded: %s\n", cl.name, testbed.RatesText(preRate))
		fmt.Printf("%s: p99 ratios: %s\n", cl.name, fmtRatios(p99))
		fmt.Printf("%s: server CPU per request ratios: %s\n", cl.name, fmtRatios(cpu))
		fmt.Printf("%s: server and wrk CPU per request ratios: %s\n", cl.name, fmtRatios(both))
		fmt.Printf("%s: per request, medians: the library's thread %.1f µs and %.3f wake-ups; nginx preempted %.3f times stock, %.3f preloaded\n",
			cl.name, median(libCPU)/1e3, median(libWakes), median(stockPreempted), median(prePreempted))
		mr, mp, mc := median(rate), median(p99), median(cpu)
		ar, hr := testbed.MeanInterval(rate)
		ap, hp := testbed.MeanInterval(p99)
		ac, hc := testbed.MeanInterval(cpu)
		ab, hb := testbed.MeanInterval(both)
		rows = append(rows, fmt.Sprintf("| %s | %.0f | %.0f | %.3f %s | %.3f ± %.3f | %.3f %s | %.3f ± %.3f | %.1f | %.1f | %.3f | %.3f ± %.3f | %.3f | %.3f ± %.3f |", cl.name,
			median(stockRate), median(preRate), mr, met(mr >= minRateRatio), ar, hr, mp, met(mp <= maxP99Ratio), ap, hp,
			median(stockCPU)/1e3, median(preCPU)/1e3, mc, ac, hc, median(both), ab, hb))
		if *overheadFlag && (mr < minRateRatio || mp > maxP99Ratio) {
			t.Logf("%s: a target is not met (see the table)", cl.name)
		}
	}
	fmt.Println()
	fmt.Println("| client | requests/s, stock (median) | preloaded (median) | requests/s, preloaded / stock, median of pairs (target >= 0.98) | mean, 95 % interval | p99, preloaded / stock, median of pairs (target <= 1.05) | mean, 95 % interval | server CPU µs per request, stock (median) | preloaded (median) | CPU per request, preloaded / stock, median of pairs | mean, 95 % interval | server and wrk CPU per request, preloaded / stock, median | mean, 95 % interval |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		fmt.Println(r)
	}
	if *overheadLog == "summary" {
		fmt.Printf("\nliblinger.so's log (the preloaded nginx): %s\n", testbed.CountsText(testbed.PreloadOutcomes(libDir)))
	}
	// A thread beyond nginx's own is the library's, started by the first
	// close it took over.
	if stock, pre := usage("stock").threads, usage("preloaded").threads; pre <= stock {
		t.Errorf("the preloaded nginx runs %d threads, the stock one %d: the library took no close over", pre, stock)
	} else {
		fmt.Printf("threads: stock nginx %d, preloaded %d (the library's among them)\n", stock, pre)
	}
}

// A use is what a server's threads did: the CPU time of all of them and
// of the library's (every thread but a process's first: nginx's processes
// are single-threaded), the library's wake-ups, and the times nginx's own
// threads were preempted (on the CPU they share with the library's).
type use struct {
	cpu, lib            time.Duration
	libWakes, preempted int64
	threads             int
}

func useOf(ts []testbed.Thread) use {
	u := use{threads: len(ts)}
	for _, th := range ts {
		u.cpu += th.CPU
		if th.TID != th.PID {
			u.lib += th.CPU
			u.libWakes += th.Voluntary
		} else {
			u.preempted += th.Involuntary
		}
	}
	return u
}

// minus is what happened between an earlier reading and u: a thread that
// started meanwhile counts from zero.
func (u use) minus(earlier use) use {
	return use{cpu: u.cpu - earlier.cpu, lib: u.lib - earlier.lib, libWakes: u.libWakes - earlier.libWakes,
		preempted: u.preempted - earlier.preempted, threads: u.threads}
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
