package probe_test

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
)

// A preloadVariant is a server run one way: stock, or under liblinger.so
// with some settings.
type preloadVariant struct {
	name string
	// preload runs the server under liblinger.so with env.
	preload bool
	env     []string
}

// preloadVariants are the ways each server runs. HAProxy sets SO_LINGER 0
// on purpose when bytes remain unread, which the library honours by
// default; LINGER_SO_LINGER=ignore lingers anyway. The stock runs are only
// measured (-table): TestRealServers checks the stock servers.
func preloadVariants(kind string) []preloadVariant {
	vs := []preloadVariant{{name: "preloaded", preload: true}}
	if *tableFlag {
		vs = append([]preloadVariant{{name: "stock"}}, vs...)
	}
	if kind == "haproxy" {
		vs = append(vs, preloadVariant{name: "preloaded, SO_LINGER ignored", preload: true, env: []string{"LINGER_SO_LINGER=ignore"}})
	}
	return vs
}

// preloadKinds are the servers of the table.
var preloadKinds = []string{"nginx", "haproxy", "apache", "java", "node", "python", "openssl"}

// mustDeliver says whether a preloaded server must deliver its last word,
// and mustNotReset whether it must send no RST: all but HAProxy with
// SO_LINGER 0 honoured (HAProxy asks for the reset on purpose when bytes
// remain), and Node.js does not deliver a client-certificate rejection,
// which it makes by destroying the socket without an alert: preloaded, the
// client gets a clean EOF instead of a reset, and nothing else to read.
func mustDeliver(kind string, v preloadVariant, mode probe.Mode) bool {
	return mustNotReset(kind, v) && !(kind == "node" && mode == probe.ModeClientCert)
}

func mustNotReset(kind string, v preloadVariant) bool {
	return v.preload && !(kind == "haproxy" && len(v.env) == 0)
}

// TestPreloadedServers probes each server of the table (nginx,
// HAProxy, Apache, OpenJDK, Node.js, Python ssl, openssl s_server) on
// loopback, TLS 1.3, with --provoke record and client-cert, stock and
// under liblinger.so: the probe's verdict and the RSTs a capture on
// loopback counts, which must agree trial by trial. Preloaded, each must be
// DELIVERED (or ANSWERED OVER HTTP) with no RST on the wire, except where
// mustDeliver and mustNotReset say why not. It prints the cells as a table. With -table
// (and -trials) it also runs each server stock, and the OpenJDK server:
//
//	go test ./internal/probe -run TestPreloadedServers -v -args -table -trials 20
func TestPreloadedServers(t *testing.T) {
	testbed.RequireRoot(t, "the preloaded real servers (packet capture on loopback)")
	testbed.CheckFDs(t)
	ca := testbed.SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	trials := 3
	if *tableFlag {
		trials = *tableTrials
	}
	var mu sync.Mutex
	var rows []string
	for _, kind := range preloadKinds {
		if kind == "java" && !*tableFlag {
			// A JVM takes seconds to start; preloadlab's TestJavaMatrix
			// checks the preloaded OpenJDK server in CI.
			continue
		}
		for _, mode := range modes {
			for _, v := range preloadVariants(kind) {
				t.Run(kind+"/"+string(mode)+"/"+v.name, func(t *testing.T) {
					dir := t.TempDir()
					cfg := testbed.RealServerConfig{Kind: kind, Files: files, Dir: dir, Host: "127.0.0.1",
						Version: tls.VersionTLS13, RequireCert: mode == probe.ModeClientCert}
					if v.preload {
						cfg.Env = testbed.PreloadEnv(t, dir, v.env...)
					}
					srv := testbed.RunRealServer(t, cfg)
					rsts := captureRSTs(t, srv.Addr)
					rep := run(t, probe.Config{Addr: srv.Addr, Mode: mode, TLS: clientTLS(ca, tls.VersionTLS13),
						Trials: trials, Upload: 1 << 20})
					got := rsts()
					mism := wireMismatches(rep, got)
					for _, m := range mism {
						t.Errorf("%s: %s", srv.Version, m)
					}
					wire := countTrialPorts(rep, got)
					lib := ""
					if v.preload {
						lib = testbed.CountsText(testbed.PreloadOutcomes(dir))
					}
					mu.Lock()
					rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %d/%d | %s |", srv.Version, mode, v.name,
						summarizeReport(rep), wire, len(rep.Trials), lib))
					mu.Unlock()
					if s := rep.Verdict.Status; mustDeliver(kind, v, mode) && s != probe.Delivered && s != probe.HTTPAnswered {
						t.Errorf("%s %s: %s", srv.Version, v.name, rep.Verdict.Line)
					}
					if mustNotReset(kind, v) && wire != 0 {
						t.Errorf("%s %s: %d of %d connections reset on the wire", srv.Version, v.name, wire, len(rep.Trials))
					}
				})
			}
		}
	}
	fmt.Fprintf(os.Stdout, "\nloopback, TLS 1.3, upload 1 MiB, %d trials a cell\n\n", trials)
	fmt.Println("| server | provoke | run | probe's verdict | reset on the wire | liblinger.so's log |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	fmt.Println(strings.Join(rows, "\n"))
}
