package probe_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
)

// serverConfig is the server side for a provocation: ModeClientCert needs
// a server that requires certificates from the test CA; ModeRecord one that
// asks for none, so the handshake completes and the bad record is what it
// rejects.
func serverConfig(p *pki.PKI, mode probe.Mode, version uint16) *tls.Config {
	cfg := p.ServerConfig(version)
	if mode == probe.ModeRecord {
		cfg.ClientAuth, cfg.ClientCAs = tls.NoClientCert, nil
	}
	return cfg
}

// clientTLS is the probe's base configuration: it trusts the test CA.
func clientTLS(p *pki.PKI, version uint16) *tls.Config {
	return &tls.Config{RootCAs: p.CAPool, ServerName: "localhost", MinVersion: version, MaxVersion: version}
}

var versions = []struct {
	name string
	v    uint16
}{{"TLS1.3", tls.VersionTLS13}, {"TLS1.2", tls.VersionTLS12}}

var modes = []probe.Mode{probe.ModeRecord, probe.ModeClientCert}

// TestLoopback probes the three local servers on loopback in both modes,
// uploading 1 MiB: a Go server that closes at once must show its alerts
// followed by resets, the same server behind linger's listener must show
// every alert delivered, and openssl s_server is recorded as it is.
func TestLoopback(t *testing.T) {
	testbed.CheckFDs(t)
	p := testbed.SharedPKI(t)
	dir := t.TempDir()
	files, err := p.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ver := range versions {
		for _, mode := range modes {
			for _, server := range []string{"go-close", "go-linger", "openssl"} {
				t.Run(ver.name+"/"+string(mode)+"/"+server, func(t *testing.T) {
					var addr string
					switch server {
					case "openssl":
						addr = startOpenSSL(t, exec.CommandContext, "127.0.0.1", files, mode == probe.ModeClientCert)
					default:
						ln, err := net.Listen("tcp", "127.0.0.1:0")
						if err != nil {
							t.Fatal(err)
						}
						addr = startGo(t, ln, server == "go-linger", serverConfig(p, mode, ver.v))
					}
					rep := run(t, probe.Config{Addr: addr, Mode: mode, TLS: clientTLS(p, ver.v)})
					checkReport(t, rep, server, ver.v)
				})
			}
		}
	}
}

// checkReport holds each server to what it must show.
func checkReport(t *testing.T, rep *probe.Report, server string, version uint16) {
	t.Helper()
	if n := rep.Counts[probe.HandshakeFailed]; n > 0 {
		t.Fatalf("%d trials failed at the handshake; the probe must be able to provoke this server", n)
	}
	switch server {
	case "go-linger":
		if rep.Verdict.Status != probe.Delivered || rep.Counts[probe.AlertFirst] != len(rep.Trials) {
			t.Errorf("behind linger every alert must arrive with no reset; got %v, %s", rep.Counts, rep.Verdict.Line)
		}
		if rep.ExitCode() != 0 {
			t.Errorf("exit code %d, want 0", rep.ExitCode())
		}
	case "go-close":
		// With TLS 1.2 and a client certificate the client cannot send
		// before the rejection, so there is nothing to lose; elsewhere the
		// upload is still arriving when the server closes.
		if version == tls.VersionTLS13 || rep.Mode == probe.ModeRecord {
			if rep.Verdict.Status == probe.Delivered || rep.Counts[probe.AlertFirst] == len(rep.Trials) {
				t.Errorf("a server closing at once under a 1 MiB upload must show resets; got %v", rep.Counts)
			}
			if rep.ExitCode() != 1 {
				t.Errorf("exit code %d, want 1", rep.ExitCode())
			}
		}
	}
	for _, tr := range rep.Trials {
		if tr.Alert == "" {
			continue
		}
		if rep.Mode == probe.ModeRecord && tr.Alert != "bad_record_mac" {
			t.Errorf("trial %d: alert %s, want bad_record_mac", tr.N, tr.Alert)
		}
	}
}

// TestConfigurationProblems: failures before the provocation are reported
// as configuration problems, stop the probe after one trial, and exit 2.
func TestConfigurationProblems(t *testing.T) {
	testbed.CheckFDs(t)
	p := testbed.SharedPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	noCerts := startGo(t, ln, true, serverConfig(p, probe.ModeRecord, 0))

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name string
		cfg  probe.Config
		want string
	}{
		{"untrusted server", probe.Config{Addr: noCerts}, " -ca"},
		{"no client certificate asked", probe.Config{Addr: noCerts, Mode: probe.ModeClientCert,
			TLS: clientTLS(p, 0)}, "did not ask for a client certificate"},
		{"refused", probe.Config{Addr: refused}, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := run(t, tc.cfg)
			if len(rep.Trials) != 1 || rep.Trials[0].Outcome != probe.HandshakeFailed {
				t.Fatalf("want one trial that failed at the handshake, got %+v", rep.Trials)
			}
			if !strings.Contains(rep.Trials[0].Error, tc.want) {
				t.Errorf("error %q does not mention %q", rep.Trials[0].Error, tc.want)
			}
			if rep.Verdict.Status != probe.Inconclusive || rep.ExitCode() != probe.ExitInconclusive {
				t.Errorf("verdict %v, exit %d; want inconclusive, %d", rep.Verdict.Status, rep.ExitCode(), probe.ExitInconclusive)
			}
		})
	}
}

// TestTimeoutAndCancel: a server that accepts and says nothing makes
// handshakes time out within the bound, and cancelling the probe returns at
// once with what it has.
func TestTimeoutAndCancel(t *testing.T) {
	testbed.CheckFDs(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })

	start := time.Now()
	rep := run(t, probe.Config{Addr: ln.Addr().String(), Timeout: 200 * time.Millisecond})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("probe took %v with a 200ms timeout", d)
	}
	if len(rep.Trials) != 1 || !strings.Contains(rep.Trials[0].Error, "timed out") {
		t.Errorf("want one trial whose handshake timed out, got %+v", rep.Trials)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	rep, err = probe.Run(ctx, probe.Config{Addr: ln.Addr().String(), Timeout: time.Minute})
	if err == nil || len(rep.Trials) != 0 {
		t.Errorf("cancelled probe: err %v, %d trials; want the context's error and no trial", err, len(rep.Trials))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancelled probe took %v", d)
	}
}

// TestHostileText: a server whose certificate names carry terminal escape
// sequences cannot make the probe print them: the
// trial's error, its line and the summary show them escaped.
func TestHostileText(t *testing.T) {
	testbed.CheckFDs(t)
	evil, err := pki.NewPKI("\x1b]0;owned\x07\x1b[2Jevil.example") // IA5: ASCII only
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := startGo(t, ln, false, serverConfig(evil, probe.ModeRecord, 0))
	rep := run(t, probe.Config{Addr: addr, TLS: &tls.Config{RootCAs: evil.CAPool, ServerName: "other.example"}})
	var summary strings.Builder
	rep.WriteSummary(&summary)
	if len(rep.Trials) != 1 || !strings.Contains(rep.Trials[0].Error, `\x1b]0;owned\x07`) {
		t.Fatalf("want one trial whose error shows the name escaped, got %+v", rep.Trials)
	}
	for what, s := range map[string]string{
		"error": rep.Trials[0].Error, "trial line": probe.FormatTrial(rep.Trials[0]), "summary": summary.String(),
	} {
		if i := strings.IndexFunc(s, func(r rune) bool { return r == 0x1b || r == 0x07 || r == '\u202e' }); i >= 0 {
			t.Errorf("%s carries a control character at %d: %q", what, i, s)
		}
	}
}

// TestAcceptingServer: a server that asks for a client certificate but
// verifies none (tls.RequireAnyClientCert) and answers the probe's request
// 200 OK accepted the untrusted certificate: its own verdict, exit 1, with
// the status line shown, not "answered over HTTP".
func TestAcceptingServer(t *testing.T) {
	testbed.CheckFDs(t)
	p := testbed.SharedPKI(t)
	cfg := p.ServerConfig(tls.VersionTLS13)
	cfg.ClientAuth, cfg.ClientCAs = tls.RequireAnyClientCert, nil
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = testbed.Linger(t, linger.Must(linger.Config{}), ln)
	addr := testbed.ServeHTTPS(t, ln, cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "welcome\n") }))
	rep := run(t, probe.Config{Addr: addr, Mode: probe.ModeClientCert, TLS: clientTLS(p, tls.VersionTLS13), Trials: 5})
	if rep.Verdict.Status != probe.AcceptedUntrusted || rep.ExitCode() != probe.ExitNotDelivered ||
		rep.Counts[probe.HTTPAccepted] != len(rep.Trials) {
		t.Errorf("verdict %s, exit %d, counts %v; want %s, exit %d, every trial %s\n%s", rep.Verdict.Status, rep.ExitCode(),
			rep.Counts, probe.AcceptedUntrusted, probe.ExitNotDelivered, probe.HTTPAccepted, rep.Verdict.Line)
	}
	if !strings.Contains(rep.Verdict.Line, "ACCEPTED UNTRUSTED CERTIFICATE") || !strings.Contains(rep.Verdict.Line, "HTTP/1.1 200 OK") {
		t.Errorf("verdict line does not name the finding and the status line:\n%s", rep.Verdict.Line)
	}
}
