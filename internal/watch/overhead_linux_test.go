package watch_test

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
	"github.com/linger-go/linger/internal/watch"
	"golang.org/x/sys/unix"
)

// The overhead numbers of docs/watch.md come from
//
//	go test ./internal/watch -run TestOverhead -v -timeout 30m -args -overhead [-overhead-groups 60] [-overhead-window 1s]
//
// as root, with nginx and wrk installed. A measurement, not a check: it
// runs only when asked.
var (
	overheadFlag   = flag.Bool("overhead", false, "TestOverhead: measure the watcher's cost under wrk")
	overheadPairs  = flag.Int("overhead-groups", 60, "TestOverhead: groups of windows (nothing, a socket alone, watching) per load")
	overheadWindow = flag.Duration("overhead-window", time.Second, "TestOverhead: length of each window")
)

// settle is how long a window waits after the watcher starts or stops
// before it reads nginx's counter: opening the sockets and mapping the
// rings is not the cost of watching.
const settle = 100 * time.Millisecond

// TestOverhead runs one wrk (one thread, 16 connections) against nginx per
// load, TLS keep-alive and "Connection: close", nginx pinned to the first
// CPU and wrk to the second, and meanwhile switches a watcher in this
// process on and off: pairs of windows, one watching and one not, in an
// order that alternates from pair to pair. nginx's own request counter
// (stub_status), read at each window's ends, gives the requests a second
// of each window; a pair's ratio is its watching window's over the other.
//
// Pairs of adjacent windows of one long run, rather than separate runs,
// because this VM's speed drifts by tens of percent from one run to the
// next (separate wrk runs of the same arm differed by up to 40 %), more
// than the difference measured; a drift slower than a window falls on
// both windows of a pair alike. It prints the median and mean of the
// pairs' ratios, the mean's 95 % interval, and the watcher's CPU time per
// 10,000 closes a second: this process does nothing else (but two reads of
// the counter a window), so its CPU time is the watcher's reading and
// counting; the kernel filter runs in the context of the process that
// sends and shows in the ratio instead.
func TestOverhead(t *testing.T) {
	if !*overheadFlag {
		t.Skip("a measurement for docs/watch.md; run with -args -overhead")
	}
	testbed.RequireRoot(t, "the watcher's overhead (a packet socket)")
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk is not installed")
	}
	ca, files := pkiFiles(t)
	srv := testbed.RunRealServer(t, testbed.RealServerConfig{Kind: "nginx", Files: files, Host: "127.0.0.1"})
	if err := testbed.PinCPU(srv.PID, 0); err != nil {
		t.Fatal(err)
	}
	port := uint16(portOf(t, srv.Addr))
	status := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CAPool, ServerName: "localhost"}}}
	defer status.CloseIdleConnections()
	count := func() (uint64, time.Time) {
		n, err := testbed.NginxRequests(status, srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return n, time.Now()
	}

	var table []string
	for _, load := range []struct {
		name string
		args []string
	}{{"keep-alive", nil}, {"Connection: close", []string{"-H", "Connection: close"}}} {
		// Longer than the windows take (each also starts and stops a
		// watcher and reads the counter); wrk is stopped after the last.
		length := time.Duration(*overheadPairs)*6*(*overheadWindow+settle) + 10*time.Second
		ctx, cancel := context.WithCancel(context.Background())
		args := append([]string{"-c", "1", "wrk", "-t1", "-c16", "-d" + strconv.Itoa(int(length.Seconds())+1) + "s"}, load.args...)
		wrk := exec.CommandContext(ctx, "taskset", append(args, "https://"+srv.Addr+"/")...)
		var out strings.Builder
		wrk.Stdout, wrk.Stderr = &out, &out
		if err := wrk.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		time.Sleep(time.Second) // wrk's connections up, nginx warm

		// The arms: nothing; a packet socket on loopback whose filter
		// passes nothing and which nobody reads, the kernel's share of
		// the cost (every packet goes through the socket's filter);
		// and the watcher.
		const (
			nothing = iota
			socketAlone
			watching
			arms
		)
		var rates, ratios [arms][]float64
		var cpuPer10k, userPer10k, pktsPerClose []float64
		window := func(arm int) float64 {
			var w *watch.Watcher
			switch arm {
			case socketAlone:
				fd := rejectAll(t)
				defer unix.Close(fd)
			case watching:
				var err error
				if w, err = watch.Start(watch.Config{Interface: "lo", Ports: []uint16{port}}); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(settle)
			var ru0, ru1 unix.Rusage
			var s0 watch.Snapshot
			if w != nil {
				s0, _ = w.Snapshot()
				unix.Getrusage(unix.RUSAGE_SELF, &ru0)
			}
			n0, t0 := count()
			time.Sleep(*overheadWindow)
			n1, t1 := count()
			if n1-n0 < 2 {
				t.Fatal("nginx served no request in a window: did wrk end early?")
			}
			rate := float64(n1-n0-1) / t1.Sub(t0).Seconds()
			if w != nil {
				unix.Getrusage(unix.RUSAGE_SELF, &ru1)
				s1, err := w.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if s1.Drops > 0 {
					t.Logf("the watcher's rings dropped %d packets", s1.Drops)
				}
				closes := float64(s1.Ports[port].Opened - s0.Ports[port].Opened)
				wall := t1.Sub(t0).Seconds()
				user := float64(ru1.Utime.Nano()-ru0.Utime.Nano()) / 1e9
				cpu := user + float64(ru1.Stime.Nano()-ru0.Stime.Nano())/1e9
				if closes > 0 {
					per := closes / wall / 10000
					cpuPer10k, userPer10k = append(cpuPer10k, cpu/wall/per), append(userPer10k, user/wall/per)
					pktsPerClose = append(pktsPerClose, float64(s1.Packets-s0.Packets)/closes)
				}
			}
			return rate
		}
		for group := range *overheadPairs {
			var got [arms]float64
			for i := range arms {
				arm := (i + group) % arms // rotated, so that no arm always follows another
				got[arm] = window(arm)
			}
			for arm := range arms {
				rates[arm] = append(rates[arm], got[arm])
				ratios[arm] = append(ratios[arm], got[arm]/got[nothing])
			}
		}
		cancel()
		wrk.Wait()
		for arm, name := range []string{"nothing", "a socket alone", "watching"} {
			t.Logf("%s: requests a second, %s: %s", load.name, name, testbed.RatesText(rates[arm]))
		}
		row := fmt.Sprintf("| %s | %.0f |", load.name, median(rates[nothing]))
		for _, arm := range []int{socketAlone, watching} {
			mean, half := testbed.MeanInterval(ratios[arm])
			row += fmt.Sprintf(" %.3fx (%.3fx ± %.3f) |", median(ratios[arm]), mean, half)
		}
		if len(cpuPer10k) > 0 {
			row += fmt.Sprintf(" %.1f %% of a core (user %.1f %%) | %.1f |", 100*median(cpuPer10k), 100*median(userPer10k), median(pktsPerClose))
		} else {
			row += " – | – |"
		}
		table = append(table, row)
	}
	t.Logf("nginx (%s) on CPU 0, wrk -t1 -c16 on CPU 1, %d groups of three %v windows per load; ratios to nothing: the median of the groups' (their mean ± its 95 %% interval):\n"+
		"| load | req/s, nothing (median) | a socket alone / nothing | watching / nothing | this process's CPU per 10,000 closes/s | packets read per connection |\n"+
		"| --- | --- | --- | --- | --- | --- |\n%s",
		srv.Version, *overheadPairs, *overheadWindow, strings.Join(table, "\n"))
}

// rejectAll opens a packet socket on loopback, arriving packets only as
// the watcher's, with a filter that passes nothing.
func rejectAll(t *testing.T) int {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	prog := []unix.SockFilter{{Code: 0x06}} // ret #0
	for _, err := range []error{
		unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &prog[0]}),
		unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1),
		unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0x0300 /* htons(ETH_P_ALL) */, Ifindex: lo.Index}),
	} {
		if err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
	}
	return fd
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
