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

	"github.com/linger-go/linger/internal/quantile"
	"github.com/linger-go/linger/internal/testbed"
	"github.com/linger-go/linger/internal/watch"
	"golang.org/x/sys/unix"
)

// The overhead numbers of docs/watch.md come from
//
//	go test ./internal/watch -run TestOverhead -v -timeout 30m -args -overhead [-overhead-groups 60] [-overhead-window 1s] [-overhead-ticker]
//
// as root, with nginx and wrk installed. A measurement, not a check: it
// runs only when asked.
var (
	overheadFlag   = flag.Bool("overhead", false, "TestOverhead: measure the watcher's cost under wrk")
	overheadGroups = flag.Int("overhead-groups", 60, "TestOverhead: groups of windows, one for each arm, per load")
	overheadWindow = flag.Duration("overhead-window", time.Second, "TestOverhead: length of each window")
	overheadTicker = flag.Bool("overhead-ticker", false, "TestOverhead: one more arm, a goroutine waking every 200 ms (as an idle reader does) and nothing else")
)

// settle is how long a window waits after its arm starts before it reads
// nginx's counter: opening the sockets and mapping the rings is not the
// cost of watching.
const settle = 100 * time.Millisecond

// TestOverhead runs one wrk (one thread, 16 connections) against nginx per
// load, TLS keep-alive and "Connection: close", nginx and wrk pinned to
// CPUs of their own (testbed.PinForLoad), and meanwhile switches among
// arms in windows: nothing; a packet socket on loopback whose filter
// passes nothing and which nobody reads (the cost of any packet socket:
// the kernel hands it every packet); the watcher; and with
// -overhead-ticker a goroutine that only wakes as an idle reader does.
// The windows come in groups, one for each arm, in an order that rotates
// from group to group. nginx's own request counter (stub_status), read at
// each window's ends, gives the window's requests a second; a group's
// ratios are its arms' over its "nothing".
//
// Windows of one long run rather than separate runs, because this VM's
// speed drifts by tens of percent from one run to the next (separate wrk
// runs of the same arm differed by up to 40 %), more than the difference
// measured; a drift slower than a group falls on its windows alike. It
// prints the median of the groups' ratios, their mean and its 95 %
// interval, and the watcher's CPU time per 10,000 closes a second: this
// process does nothing else (but two reads of the counter a window), so
// its CPU time is the watcher's reading and counting; the kernel filter
// runs in the context of the process that sends and shows in the ratio
// instead.
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
	client := testbed.PinForLoad(t, srv.PID)
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

	const (
		nothing = iota
		socketAlone
		watching
		ticking
	)
	names := []string{"nothing", "a socket alone", "watching", "a 200 ms ticker alone"}
	arms := 3
	if *overheadTicker {
		arms = 4
	}
	var cpuPer10k, userPer10k, pktsPerClose []float64
	// window runs one arm for a window and returns nginx's requests a
	// second; whatever the arm started ends with it, a failure included.
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
			defer w.Close()
		case ticking:
			stop, stopped := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(stopped)
				tick := time.NewTicker(200 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			defer func() { close(stop); <-stopped }()
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
			s1, err := w.Close()
			if err != nil {
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
	// measure runs one wrk for the groups of one load and returns its
	// table row; wrk ends with it, a failure included.
	measure := func(name string, wrkArgs ...string) string {
		cpuPer10k, userPer10k, pktsPerClose = nil, nil, nil
		// Longer than the windows take (each also starts its arm and
		// reads the counter); wrk is stopped after the last.
		length := time.Duration(*overheadGroups*arms)*2*(*overheadWindow+settle) + 10*time.Second
		ctx, cancel := context.WithCancel(context.Background())
		cmd := testbed.Taskset(client, "wrk", append([]string{"-t1", "-c16", "-d" + strconv.Itoa(int(length.Seconds())+1) + "s"},
			append(wrkArgs, "https://"+srv.Addr+"/")...)...)
		wrk := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
		if err := wrk.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		defer func() { cancel(); wrk.Wait() }()
		time.Sleep(time.Second) // wrk's connections up, nginx warm

		rates, ratios := make([][]float64, arms), make([][]float64, arms)
		for group := range *overheadGroups {
			got := make([]float64, arms)
			for i := range arms {
				arm := (i + group) % arms // rotated, so that no arm always follows another
				got[arm] = window(arm)
			}
			for arm := range arms {
				rates[arm] = append(rates[arm], got[arm])
				ratios[arm] = append(ratios[arm], got[arm]/got[nothing])
			}
		}
		row := fmt.Sprintf("| %s | %.0f |", name, median(rates[nothing]))
		for arm := range arms {
			t.Logf("%s: requests a second, %s: %s", name, names[arm], testbed.RatesText(rates[arm]))
			if arm != nothing {
				mean, half := testbed.MeanInterval(ratios[arm])
				row += fmt.Sprintf(" %.3fx (%.3fx ± %.3f) |", median(ratios[arm]), mean, half)
			}
		}
		if len(cpuPer10k) > 0 {
			return row + fmt.Sprintf(" %.1f %% of a core (user %.1f %%) | %.1f |", 100*median(cpuPer10k), 100*median(userPer10k), median(pktsPerClose))
		}
		return row + " – | – |"
	}
	rows := []string{measure("keep-alive"), measure("Connection: close", "-H", "Connection: close")}
	head := "| load | req/s, nothing (median) |"
	for arm := 1; arm < arms; arm++ {
		head += " " + names[arm] + " / nothing |"
	}
	t.Logf("nginx (%s), wrk -t1 -c16 (pinned apart: %v), %d groups of %d %v windows per load; ratios to nothing: the median of the groups' (their mean ± its 95 %% interval):\n"+
		"%s this process's CPU per 10,000 closes/s | packets read per connection |\n|%s\n%s",
		srv.Version, client >= 0, *overheadGroups, arms, *overheadWindow, head, strings.Repeat(" --- |", arms+3), strings.Join(rows, "\n"))
}

func median(v []float64) float64 {
	return quantile.NearestRank(slices.Sorted(slices.Values(v)), 0.5)
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
