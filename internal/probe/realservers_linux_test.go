package probe_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
)

// wireMismatches compares what the probe said of each trial with the RSTs
// the server sent, as a packet socket on its interface saw them, and
// returns one line per trial on which they disagree.
func wireMismatches(rep *probe.Report, rsts map[int]int) []string {
	var bad []string
	for _, tr := range rep.Trials {
		if tr.ClientPort == 0 || tr.Outcome == probe.HandshakeFailed && tr.Version == "" {
			continue // no connection, or no TLS spoken: nothing to compare
		}
		if onWire := rsts[tr.ClientPort] > 0; onWire != tr.Reset {
			bad = append(bad, fmt.Sprintf("trial %d (port %d): probe says reset=%v (%s), the wire carried %d RSTs",
				tr.N, tr.ClientPort, tr.Reset, tr.Outcome, rsts[tr.ClientPort]))
		}
	}
	return bad
}

// captureRSTs counts the RSTs sent from addr's port on loopback until the
// test's cleanup, and returns a function that waits a moment for RSTs
// still in flight and returns the counts.
func captureRSTs(t *testing.T, addr string) func() map[int]int {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	c, err := testbed.CaptureRSTs("lo", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("capture: %v", err)
		}
	})
	return func() map[int]int {
		// The probe waits for its last bytes to be acknowledged or reset
		// before it closes; an RST it could not see would follow at once.
		time.Sleep(50 * time.Millisecond)
		return c.RSTs()
	}
}

// TestRealServers probes nginx, HAProxy and Apache (and Caddy, when a caddy
// binary is on PATH) on loopback, with configurations the test writes: TLS
// 1.3 and 1.2, client certificates required (for --provoke client-cert) or
// not (for --provoke record), with an upload smaller than the server's
// receive buffer and one larger. In every trial the probe's reset must be
// what the wire carried, and each server must answer as it is known to:
// nginx with an HTTP 400 to an untrusted certificate, the others with an
// alert.
func TestRealServers(t *testing.T) {
	testbed.RequireRoot(t, "the real-server probes (packet capture on loopback)")
	testbed.CheckFDs(t)
	ca := testbed.SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The servers people run as they come; the platform servers (java,
	// node, python, openssl) are TestPreloadedServers's.
	for _, kind := range []string{"nginx", "haproxy", "apache", "caddy"} {
		if kind == "caddy" {
			if _, err := exec.LookPath("caddy"); err != nil {
				continue // not a Debian package; the README's table builds it
			}
		}
		for _, ver := range versions {
			// Record mode against a server that demands a certificate
			// must point at client-cert mode, whatever the server
			// answers (a TLS 1.2 handshake failure, certificate_required,
			// an HTTP 400).
			t.Run(kind+"/"+ver.name+"/record, certificate required", func(t *testing.T) {
				srv := testbed.RunRealServer(t, testbed.RealServerConfig{Kind: kind, Files: files, Host: "127.0.0.1",
					Version: ver.v, RequireCert: true})
				rep := run(t, probe.Config{Addr: srv.Addr, TLS: clientTLS(ca, ver.v), Trials: 2, Upload: 16 << 10})
				if !strings.Contains(rep.Verdict.Line, " -provoke client-cert") {
					t.Errorf("verdict does not suggest -provoke client-cert: %s", rep.Verdict.Line)
				}
			})
			for _, mode := range modes {
				t.Run(kind+"/"+ver.name+"/"+string(mode), func(t *testing.T) {
					srv := testbed.RunRealServer(t, testbed.RealServerConfig{Kind: kind, Files: files, Host: "127.0.0.1",
						Version: ver.v, RequireCert: mode == probe.ModeClientCert})
					for _, upload := range []int64{16 << 10, 1 << 20} {
						rsts := captureRSTs(t, srv.Addr)
						rep := run(t, probe.Config{Addr: srv.Addr, Mode: mode, TLS: clientTLS(ca, ver.v),
							Trials: 3, Upload: upload})
						got := rsts()
						for _, m := range wireMismatches(rep, got) {
							t.Errorf("%s, upload %d KiB: %s", srv.Version, upload>>10, m)
						}
						checkRealServer(t, kind, mode, ver.v, rep)
					}
				})
			}
		}
	}
}

// checkRealServer holds each server to what it is known to answer.
func checkRealServer(t *testing.T, kind string, mode probe.Mode, version uint16, rep *probe.Report) {
	t.Helper()
	if rep.Provoked() != len(rep.Trials) {
		t.Fatalf("%d of %d trials failed at the handshake: %s", len(rep.Trials)-rep.Provoked(), len(rep.Trials), rep.Verdict.Line)
	}
	answers := map[probe.TrialOutcome]bool{}
	for _, tr := range rep.Trials {
		answers[tr.Outcome] = true
	}
	var want []probe.TrialOutcome
	switch {
	case kind == "nginx" && mode == probe.ModeClientCert:
		want = []probe.TrialOutcome{probe.HTTPAnswer, probe.HTTPThenReset}
	default:
		want = []probe.TrialOutcome{probe.AlertFirst, probe.AlertAfterError}
	}
	for o := range answers {
		ok := false
		for _, w := range want {
			ok = ok || o == w
		}
		if !ok {
			t.Errorf("outcome %s; %s is known to answer with %v", o, kind, want)
		}
	}
	if mode == probe.ModeRecord {
		for _, tr := range rep.Trials {
			if tr.Alert != "" && tr.Alert != "bad_record_mac" {
				t.Errorf("trial %d: alert %s, want bad_record_mac", tr.N, tr.Alert)
			}
		}
	}
	if version == tls.VersionTLS12 && mode == probe.ModeClientCert && kind != "nginx" {
		for _, tr := range rep.Trials {
			if !tr.InHandshake {
				t.Errorf("trial %d: a TLS 1.2 rejection must be reported inside the handshake", tr.N)
			}
		}
	}
}
