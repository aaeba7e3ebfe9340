package watch_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/netns"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
	"github.com/linger-go/linger/internal/watch"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	testbed.StartPoller()
	goleak.VerifyTestMain(m)
}

// observer collects a watcher's verdicts by the peer's port.
type observer struct {
	mu     sync.Mutex
	byPeer map[int][]watch.Verdict
}

func (o *observer) add(v watch.Verdict) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.byPeer[int(v.Peer.Port())] = append(o.byPeer[int(v.Peer.Port())], v)
}

func (o *observer) get() map[int][]watch.Verdict {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[int][]watch.Verdict, len(o.byPeer))
	for k, v := range o.byPeer {
		m[k] = append([]watch.Verdict(nil), v...)
	}
	return m
}

// side is where a test's server runs: loopback in the test's own
// namespace, or the server namespace of a netns.Pair.
type side struct {
	iface string
	do    func(func() error) error
}

var loopback = side{iface: "lo", do: func(f func() error) error { return f() }}

// startWatch watches port on s, and, as the independent check, counts the
// RSTs the server sends with testbed's own packet socket (a different
// filter, a different parser). It returns the verdicts and the capture's
// counts, after a moment for segments still in flight; both stop when the
// test ends, failing it if either dropped packets.
func startWatch(t *testing.T, s side, port int) (get func() (map[int][]watch.Verdict, map[int]int, watch.Snapshot)) {
	t.Helper()
	o := &observer{byPeer: map[int][]watch.Verdict{}}
	var w *watch.Watcher
	var c *testbed.RSTCapture
	err := s.do(func() (err error) {
		if w, err = watch.Start(watch.Config{Interface: s.iface, Ports: []uint16{uint16(port)}, OnVerdict: o.add}); err != nil {
			return err
		}
		if c, err = testbed.CaptureRSTs(s.iface, port); err != nil {
			w.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		snap, err := w.Close()
		if err != nil {
			t.Errorf("watch: %v", err)
		}
		if snap.Drops != 0 {
			t.Errorf("watch: the kernel dropped %d packets", snap.Drops)
		}
		if err := c.Close(); err != nil {
			t.Errorf("capture: %v", err)
		}
	})
	return func() (map[int][]watch.Verdict, map[int]int, watch.Snapshot) {
		time.Sleep(100 * time.Millisecond)
		snap, err := w.Snapshot()
		if err != nil {
			t.Errorf("watch: %v", err)
		}
		return o.get(), c.RSTs(), snap
	}
}

// truth is one connection whose fate a test knows from outside the
// watcher: the driver's port and whether the connection was reset, as the
// driver saw it.
type truth struct {
	port  int
	reset bool
	// afterFIN: the reset came after the server's clean FIN, when the
	// driver can tell (-1: it cannot).
	afterFIN int
	// curlExit is curl's exit status, for a curl run.
	curlExit int
}

// curlTruth sets each curl run's reset from the capture: the server sent
// an RST, and curl failed (a curl that exits 0 had its whole answer, and
// an RST after it answered curl's own close_notify).
func curlTruth(ts []truth, rsts map[int]int) {
	for i := range ts {
		ts[i].reset = rsts[ts[i].port] > 0 && ts[i].curlExit != 0
	}
}

// tally compares the watcher with the driver and with the capture, and
// returns the counts the tables print.
type tally struct {
	conns, driverLost, captureLost, watchLost int
	// driverAfterFIN and watchAfterFIN count the resets after a FIN, of
	// the connections whose driver can tell.
	driverAfterFIN, watchAfterFIN int
	kinds                         map[watch.Kind]int
	mismatches                    []string
}

func compare(truths []truth, verdicts map[int][]watch.Verdict, rsts map[int]int) tally {
	tl := tally{kinds: map[watch.Kind]int{}}
	for _, tr := range truths {
		tl.conns++
		onWire := rsts[tr.port] > 0
		lost, afterFIN := false, false
		for _, v := range verdicts[tr.port] {
			tl.kinds[v.Kind]++
			lost = lost || v.Lost()
			afterFIN = afterFIN || v.Lost() && v.AfterFIN
		}
		if tr.afterFIN >= 0 {
			tl.driverAfterFIN += tr.afterFIN
			if afterFIN {
				tl.watchAfterFIN++
			}
		}
		if len(verdicts[tr.port]) > 1 {
			tl.mismatches = append(tl.mismatches, fmt.Sprintf("port %d: %d verdicts", tr.port, len(verdicts[tr.port])))
		}
		if tr.reset {
			tl.driverLost++
		}
		if onWire {
			tl.captureLost++
		}
		if lost {
			tl.watchLost++
		}
		// An RST the watcher explains as the peer's own doing (its
		// close_notify, or its reset crossing the server's) is on the
		// wire but lost no last word.
		explained := false
		for _, v := range verdicts[tr.port] {
			explained = explained || v.Kind == watch.ClosingReset || v.Kind == watch.PeerReset
		}
		if lost != onWire && !(onWire && explained) {
			tl.mismatches = append(tl.mismatches, fmt.Sprintf("port %d: watch lost=%v %v, the capture saw %d RSTs, the driver reset=%v",
				tr.port, lost, verdicts[tr.port], rsts[tr.port], tr.reset))
		}
	}
	return tl
}

// within reports whether got is within 2 % or 1 connection of want, the
// issue's margin.
func within(got, want int) bool {
	d := got - want
	if d < 0 {
		d = -d
	}
	return d <= 1 || float64(d) <= 0.02*float64(want)
}

// check holds a tally to the truth: the watcher agrees with the capture
// on every connection, and with the driver within the margin; a lingering
// server loses nothing.
func (tl tally) check(t *testing.T, lingering bool) {
	t.Helper()
	t.Logf("%d connections: driver saw %d reset (%d after a FIN), capture %d, watch %d lost (%d after a FIN) %v",
		tl.conns, tl.driverLost, tl.driverAfterFIN, tl.captureLost, tl.watchLost, tl.watchAfterFIN, tl.kinds)
	for _, m := range tl.mismatches {
		t.Errorf("watch disagrees with the wire: %s", m)
	}
	if !within(tl.watchLost, tl.driverLost) {
		t.Errorf("watch counts %d lost, the driver %d: outside ±2 %% or ±1", tl.watchLost, tl.driverLost)
	}
	if !within(tl.watchAfterFIN, tl.driverAfterFIN) {
		t.Errorf("watch counts %d resets after a FIN, the driver %d: outside ±2 %% or ±1", tl.watchAfterFIN, tl.driverAfterFIN)
	}
	if lingering && tl.watchLost != 0 {
		t.Errorf("a lingering server lost %d last words", tl.watchLost)
	}
}

func probeTruths(rep *probe.Report) []truth {
	var ts []truth
	for _, tr := range rep.Trials {
		if tr.ClientPort != 0 {
			afterFIN := 0
			if tr.Reset && tr.FIN {
				afterFIN = 1
			}
			ts = append(ts, truth{port: tr.ClientPort, reset: tr.Reset, afterFIN: afterFIN})
		}
	}
	return ts
}

func runProbe(t *testing.T, cfg probe.Config) *probe.Report {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Watch == 0 {
		cfg.Watch = 150 * time.Millisecond
	}
	rep, err := probe.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	rep.WriteSummary(&b)
	t.Log(b.String())
	return rep
}

func startGo(t *testing.T, ln net.Listener, lingering bool, cfg *tls.Config) string {
	t.Helper()
	if lingering {
		ln = testbed.Linger(t, linger.Must(linger.Config{}), ln)
	}
	return testbed.ServeTLS(t, ln, cfg, nil)
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

func clientTLS(p *pki.PKI, version uint16) *tls.Config {
	return &tls.Config{RootCAs: p.CAPool, ServerName: "localhost", MinVersion: version, MaxVersion: version}
}

// TestGoServers: Go servers on loopback, IPv4 and IPv6, closing at once
// or lingering, probed in both provocations over TLS 1.3 and 1.2. Every
// connection the capture saw reset the watcher counts lost, and only
// those; the alert is what it names as the last word (a Go server sends
// nothing after its alert but, after a completed handshake, a
// close_notify, which is an alert too); linger loses none.
func TestGoServers(t *testing.T) {
	testbed.RequireRoot(t, "watching loopback with a packet socket")
	testbed.CheckFDs(t)
	p := testbed.SharedPKI(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		for _, ver := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
			for _, mode := range []probe.Mode{probe.ModeClientCert, probe.ModeRecord} {
				for _, lingering := range []bool{false, true} {
					if host == "::1" && (ver == tls.VersionTLS12 || mode == probe.ModeRecord) {
						continue // IPv6 once is enough
					}
					name := fmt.Sprintf("%s/%s/%s/linger=%v", host, tls.VersionName(ver), mode, lingering)
					t.Run(name, func(t *testing.T) {
						ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
						if err != nil {
							t.Skipf("no %s: %v", host, err)
						}
						cfg := p.ServerConfig(ver)
						if mode == probe.ModeRecord {
							cfg.ClientAuth = tls.NoClientCert // the bad record is what it rejects
						}
						addr := startGo(t, ln, lingering, cfg)
						get := startWatch(t, loopback, portOf(t, addr))
						rep := runProbe(t, probe.Config{Addr: addr, Mode: mode, TLS: clientTLS(p, ver), Trials: 10, Upload: 256 << 10})
						verdicts, rsts, _ := get()
						tl := compare(probeTruths(rep), verdicts, rsts)
						tl.check(t, lingering)
						if tl.watchLost != tl.kinds[watch.LostAlert] {
							t.Errorf("lost %d, %d of them after an alert; a Go server's last record is an alert", tl.watchLost, tl.kinds[watch.LostAlert])
						}
					})
				}
			}
		}
	}
}

// pkiFiles returns the process's PKI and its files, written for the test.
func pkiFiles(t *testing.T) (*pki.PKI, pki.Files) {
	t.Helper()
	ca := testbed.SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca, files
}

// newPair joins two namespaces by the impaired path until the test ends.
func newPair(t *testing.T) *netns.Pair {
	t.Helper()
	pair, err := netns.NewPair(netns.PathConfig{Delay: 10 * time.Millisecond, Loss: 0.02})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pair.Close(); err != nil {
			t.Errorf("closing the namespaces: %v", err)
		}
	})
	return pair
}

// curlUploads runs curl n times, each presenting a certificate the server
// rejects and uploading 1 MiB, and returns each run's local port with
// curl's exit status. curl cannot say whether the server reset it (it
// reports "connection reset", "send failure" or the alert, depending on
// timing), so the capture is the truth for these runs (curlTruth).
func curlUploads(t *testing.T, addr string, files pki.Files, n int) []truth {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	body := t.TempDir() + "/body"
	if err := exec.Command("dd", "if=/dev/zero", "of="+body, "bs=1M", "count=1", "status=none").Run(); err != nil {
		t.Fatal(err)
	}
	var ts []truth
	codes := map[int]int{}
	for range n {
		out, err := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{local_port}", "--max-time", "10",
			"--cacert", files.CA, "--cert", files.UntrustedCert, "--key", files.UntrustedKey,
			"--data-binary", "@"+body, "https://localhost:"+strconv.Itoa(portOf(t, addr))+"/").Output()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		codes[code]++
		port, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		if port == 0 {
			t.Fatalf("curl did not say its port (exit %d)", code)
		}
		ts = append(ts, truth{port: port, afterFIN: -1, curlExit: code})
	}
	t.Logf("curl exit statuses: %v", codes)
	return ts
}

// TestRealServers: nginx, HAProxy, Apache and openssl s_server as
// installed, with TLS 1.3 and client certificates required, driven by the
// probe (a rejected certificate, and a corrupted record on a server that
// asks for none) and by curl uploading 1 MiB with a rejected certificate;
// then nginx, HAProxy and Apache under liblinger.so (preload/), where the
// watcher must count no lost last word at all.
func TestRealServers(t *testing.T) {
	testbed.RequireRoot(t, "watching loopback with a packet socket")
	testbed.CheckFDs(t)
	ca, files := pkiFiles(t)
	type server struct {
		kind    string
		preload bool
	}
	servers := []server{{"nginx", false}, {"haproxy", false}, {"apache", false}, {"openssl", false},
		{"nginx", true}, {"haproxy", true}, {"apache", true}}
	for _, s := range servers {
		name := s.kind
		if s.preload {
			name += "+preload"
		}
		run := func(t *testing.T, requireCert bool) *testbed.RealServer {
			cfg := testbed.RealServerConfig{Kind: s.kind, Files: files, Host: "127.0.0.1",
				Version: tls.VersionTLS13, RequireCert: requireCert}
			if s.preload {
				cfg.Env = testbed.PreloadEnv(t, t.TempDir())
			}
			return testbed.RunRealServer(t, cfg)
		}
		for _, mode := range []probe.Mode{probe.ModeClientCert, probe.ModeRecord} {
			t.Run(name+"/probe/"+string(mode), func(t *testing.T) {
				srv := run(t, mode == probe.ModeClientCert)
				get := startWatch(t, loopback, portOf(t, srv.Addr))
				rep := runProbe(t, probe.Config{Addr: srv.Addr, Mode: mode, TLS: clientTLS(ca, tls.VersionTLS13), Trials: 10, Upload: 256 << 10})
				verdicts, rsts, _ := get()
				compare(probeTruths(rep), verdicts, rsts).check(t, s.preload)
			})
		}
		t.Run(name+"/curl", func(t *testing.T) {
			srv := run(t, true)
			get := startWatch(t, loopback, portOf(t, srv.Addr))
			ts := curlUploads(t, srv.Addr, files, 10)
			verdicts, rsts, _ := get()
			curlTruth(ts, rsts)
			compare(ts, verdicts, rsts).check(t, s.preload)
		})
	}
}

// TestImpairedPath: the server in a network namespace behind 10 ms each
// way and 2 % loss, where retransmissions repeat FINs, alerts and the
// resets that answer them; the watcher runs in the server's namespace on
// every device. It must still agree with the probe and the capture on
// every connection, and the namespace's own kernel counters are logged
// beside it.
func TestImpairedPath(t *testing.T) {
	testbed.RequireRoot(t, "the impaired path (network namespaces)")
	testbed.CheckFDs(t)
	p := testbed.SharedPKI(t)
	pair := newPair(t)
	host := pair.ServerIP.String()
	srvSide := side{iface: "", do: pair.Server.Do}
	for _, lingering := range []bool{false, true} {
		t.Run(fmt.Sprintf("linger=%v", lingering), func(t *testing.T) {
			ln, err := pair.Server.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			addr := startGo(t, ln, lingering, p.ServerConfig(0))
			// Segments of the previous run still in flight on the delayed
			// path would draw resets from a socket that is gone.
			time.Sleep(200 * time.Millisecond)
			before, err := pair.Server.Counters()
			if err != nil {
				t.Fatal(err)
			}
			get := startWatch(t, srvSide, portOf(t, addr))
			cfg := clientTLS(p, 0)
			cfg.ServerName = host
			rep := runProbe(t, probe.Config{Addr: addr, Mode: probe.ModeClientCert, TLS: cfg, Trials: 8,
				Upload: 256 << 10, Dial: pair.Client.DialContext, Watch: time.Second})
			time.Sleep(200 * time.Millisecond)
			verdicts, rsts, _ := get()
			after, err := pair.Server.Counters()
			if err != nil {
				t.Fatal(err)
			}
			d := after.Sub(before)
			t.Logf("server namespace: %d RSTs sent, TCPAbortOnClose +%d, TCPAbortOnData +%d, %d retransmitted segments",
				d.OutRsts, d.AbortOnClose, d.AbortOnData, d.RetransSegs)
			compare(probeTruths(rep), verdicts, rsts).check(t, lingering)
		})
	}
}

// startHTTP serves HTTPS (HTTP/1.1 and HTTP/2) with Go's net/http on
// loopback until the test ends, answering every request with a short
// body.
func startHTTP(t *testing.T, p *pki.PKI, lingering bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if lingering {
		ln = testbed.Linger(t, linger.Must(linger.Config{}), ln)
	}
	cfg := p.ServerConfig(0)
	cfg.ClientAuth, cfg.ClientCAs = tls.NoClientCert, nil
	cfg.NextProtos = []string{"h2", "http/1.1"}
	srv := &http.Server{TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(tls.NewListener(ln, cfg))
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestCleanTraffic: traffic that ends cleanly (wrk keeping connections
// alive, wrk with "Connection: close", h2load over HTTP/2) against every
// server: no lost last word, and the capture agrees. wrk's own end (it
// closes connections with responses still arriving) shows as peer resets.
func TestCleanTraffic(t *testing.T) {
	testbed.RequireRoot(t, "watching loopback with a packet socket")
	testbed.CheckFDs(t)
	ca, files := pkiFiles(t)
	type load struct {
		name string
		prog string
		args func(url string) []string
	}
	loads := []load{
		{"wrk keep-alive", "wrk", func(u string) []string { return []string{"-t1", "-c8", "-d1s", u} }},
		{"wrk close", "wrk", func(u string) []string { return []string{"-t1", "-c8", "-d1s", "-H", "Connection: close", u} }},
		{"h2load", "h2load", func(u string) []string { return []string{"-n2000", "-c8", "-m4", u} }},
	}
	for _, kind := range []string{"go", "go-linger", "nginx", "haproxy", "apache"} {
		for _, l := range loads {
			if l.prog == "h2load" && !strings.HasPrefix(kind, "go") {
				continue // testbed's configurations serve HTTP/1.1 only
			}
			t.Run(kind+"/"+l.name, func(t *testing.T) {
				if _, err := exec.LookPath(l.prog); err != nil {
					t.Skipf("%s is not installed", l.prog)
				}
				var addr string
				switch kind {
				case "go", "go-linger":
					addr = startHTTP(t, ca, kind == "go-linger")
				default:
					addr = testbed.RunRealServer(t, testbed.RealServerConfig{Kind: kind, Files: files, Host: "127.0.0.1"}).Addr
				}
				get := startWatch(t, loopback, portOf(t, addr))
				out, err := exec.Command(l.prog, l.args("https://"+addr+"/")...).CombinedOutput()
				if err != nil {
					t.Fatalf("%s: %v\n%s", l.prog, err, out)
				}
				verdicts, rsts, snap := get()
				c := snap.Ports[uint16(portOf(t, addr))]
				t.Logf("%d connections opened, %d closed by the server, %d lost, %d resets on a peer closing, %d peer resets; capture: %d connections reset by the server",
					c.Opened, c.ServerClosed, c.Lost, c.ClosingResets, c.PeerResets, len(rsts))
				if c.Opened == 0 {
					t.Fatalf("no connection seen:\n%s", out)
				}
				if c.Lost != 0 {
					t.Errorf("clean traffic: watch counts %d lost", c.Lost)
				}
				// Every reset the capture saw is one the watcher explains.
				n := 0
				for port := range rsts {
					vs := verdicts[port]
					// A peer reset crossing the server's on the wire (both
					// sent before either arrived) is the peer's choice.
					// A busy load reuses client ports: one verdict a
					// connection, and no more resets on a peer closing
					// than the capture's RSTs (a peer reset on a reused
					// port may have drawn none from the server).
					explained, closing := len(vs) > 0, 0
					for _, v := range vs {
						explained = explained && (v.Kind == watch.ClosingReset || v.Kind == watch.PeerReset)
						if v.Kind == watch.ClosingReset {
							closing++
						}
					}
					explained = explained && closing <= rsts[port]
					if explained {
						continue
					}
					if n++; n <= 5 {
						t.Errorf("port %d: the capture saw %d RSTs, the watcher %+v", port, rsts[port], vs)
					}
				}
			})
		}
	}
}

// TestSnapshotCurrent: a snapshot counts every packet the kernel has
// handed over, even while the reader pauses (up to maxPause, reached
// after a quiet second): a connection opened just before it is counted.
func TestSnapshotCurrent(t *testing.T) {
	testbed.RequireRoot(t, "watching loopback with a packet socket")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(portOf(t, ln.Addr().String()))
	w, err := watch.Start(watch.Config{Interface: "lo", Ports: []uint16{port}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	time.Sleep(time.Second) // quiet: the reader's pause grows to its longest
	for i := range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		// The server's SYN-ACK reached the ring before Dial returned
		// (loopback delivers in the sender's context).
		s, err := w.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Ports[port].Opened; got != uint64(i+1) {
			t.Fatalf("after %d connections, the snapshot counts %d opened", i+1, got)
		}
	}
}
