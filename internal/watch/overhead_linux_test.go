package watch_test

import (
	"flag"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
	"github.com/linger-go/linger/internal/watch"
	"golang.org/x/sys/unix"
)

// The overhead numbers of docs/watch.md come from
//
//	go test ./internal/watch -run TestOverhead -v -args -overhead [-overhead-rounds 5] [-overhead-d 3s]
//
// as root, with nginx and wrk installed. A measurement, not a check: it
// runs only when asked.
var (
	overheadFlag   = flag.Bool("overhead", false, "TestOverhead: measure the watcher's cost under wrk")
	overheadRounds = flag.Int("overhead-rounds", 5, "TestOverhead: pairs of runs (without, with the watcher) per load")
	overheadD      = flag.Duration("overhead-d", 3*time.Second, "TestOverhead: length of each wrk run")
)

var wrkRequests = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// TestOverhead runs wrk against nginx (TLS, keep-alive and "Connection:
// close") in alternating runs without and with a watcher in this process,
// and prints the requests a second of each, their ratio (medians), and the
// watcher's CPU time per 10,000 closes a second: this process does nothing
// else while wrk runs, so its CPU time is the watcher's reading and
// counting (the kernel filter runs in the sending process's context and
// shows in the ratio instead).
func TestOverhead(t *testing.T) {
	if !*overheadFlag {
		t.Skip("a measurement for docs/watch.md; run with -args -overhead")
	}
	testbed.RequireRoot(t, "the watcher's overhead (a packet socket)")
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk is not installed")
	}
	_, files := pkiFiles(t)
	srv := testbed.RunRealServer(t, testbed.RealServerConfig{Kind: "nginx", Files: files, Host: "127.0.0.1"})
	url := "https://" + srv.Addr + "/"
	wrk := func(args ...string) float64 {
		out, err := exec.Command("wrk", append([]string{"-t1", "-c16", "-d" + overheadD.String()}, append(args, url)...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		m := wrkRequests.FindSubmatch(out)
		if m == nil {
			t.Fatalf("wrk printed no Requests/sec:\n%s", out)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	var table []string
	for _, load := range []struct {
		name string
		args []string
	}{{"keep-alive", nil}, {"Connection: close", []string{"-H", "Connection: close"}}} {
		var off, on, ticking, vsOff, vsTicker, cpuPer10k, userPer10k, pktsPerClose []float64
		for round := range *overheadRounds {
			var rOff, rOn, rTick float64
			without := func() { rOff = wrk(load.args...) }
			// The control: a goroutine that only wakes every 20 ms, as
			// the watcher's reader does between batches (batchPause). On this VM a
			// latency-bound load runs faster when something keeps a
			// vCPU from idling; this arm shows that effect alone, and
			// the watcher is compared with it as well as with nothing.
			ticker := func() {
				stop, ticked := make(chan struct{}), make(chan struct{})
				go func() {
					defer close(ticked)
					for {
						select {
						case <-stop:
							return
						case <-time.After(20 * time.Millisecond):
						}
					}
				}()
				rTick = wrk(load.args...)
				close(stop)
				<-ticked
			}
			with := func() {
				w, err := watch.Start(watch.Config{Interface: "lo", Ports: []uint16{uint16(portOf(t, srv.Addr))}})
				if err != nil {
					t.Fatal(err)
				}
				var ru0, ru1 unix.Rusage
				unix.Getrusage(unix.RUSAGE_SELF, &ru0)
				t0 := time.Now()
				rOn = wrk(load.args...)
				wall := time.Since(t0)
				unix.Getrusage(unix.RUSAGE_SELF, &ru1)
				user := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano())
				cpu := user + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
				snap, err := w.Close()
				if err != nil {
					t.Fatal(err)
				}
				c := snap.Ports[uint16(portOf(t, srv.Addr))]
				if snap.Drops > 0 {
					t.Logf("the watcher's socket dropped %d packets", snap.Drops)
				}
				if c.Opened > 0 {
					closesPerSec := float64(c.Opened) / wall.Seconds()
					// CPU seconds a second (cores), scaled to 10,000 closes a second.
					cpuPer10k = append(cpuPer10k, cpu.Seconds()/wall.Seconds()/(closesPerSec/10000))
					userPer10k = append(userPer10k, user.Seconds()/wall.Seconds()/(closesPerSec/10000))
					pktsPerClose = append(pktsPerClose, float64(snap.Packets)/float64(c.Opened))
				}
				t.Logf("%s, watching: %d connections, %d packets, this process's CPU %v (user %v) over %v",
					load.name, c.Opened, snap.Packets, cpu.Round(time.Millisecond), user.Round(time.Millisecond), wall.Round(time.Millisecond))
			}
			// Rotate the order, so that a drift in the machine's load
			// favours no arm.
			arms := []func(){without, ticker, with}
			for i := range arms {
				arms[(i+round)%len(arms)]()
			}
			off, on, ticking = append(off, rOff), append(on, rOn), append(ticking, rTick)
			vsOff, vsTicker = append(vsOff, rOn/rOff), append(vsTicker, rOn/rTick)
			t.Logf("%s, round %d: %.0f req/s without, %.0f with a ticker, %.0f watching", load.name, round+1, rOff, rTick, rOn)
		}
		row := fmt.Sprintf("| %s | %.0f | %.0f | %.0f | %.3fx | %.3fx |", load.name, median(off), median(ticking), median(on),
			median(vsOff), median(vsTicker))
		if len(cpuPer10k) > 0 {
			row += fmt.Sprintf(" %.0f %% of a core (user %.0f %%) | %.1f |", 100*median(cpuPer10k), 100*median(userPer10k), median(pktsPerClose))
		} else {
			row += " – | – |"
		}
		table = append(table, row)
	}
	t.Logf("nginx (%s), wrk -t1 -c16 -d%v, %d rounds, medians (ratios: the median of each round's own ratio):\n"+
		"| load | req/s, nothing | req/s, a 20 ms ticker alone | req/s, watching | watching / nothing | watching / ticker | this process's CPU per 10,000 closes/s | packets read per connection |\n"+
		"| --- | --- | --- | --- | --- | --- | --- | --- |\n%s",
		srv.Version, *overheadD, *overheadRounds, joinLines(table))
}

func joinLines(s []string) string {
	out := ""
	for _, l := range s {
		out += l + "\n"
	}
	return out
}
