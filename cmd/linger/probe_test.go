package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
)

// TestProbeCommand runs the command against a lingering and a plainly
// closing Go server: the exit status is 0 for the first and 1 for the
// second, --json prints a report, a bad command line exits 2 and a probe
// that cannot provoke anything 3.
func TestProbeCommand(t *testing.T) {
	testbed.CheckFDs(t) // first, so its cleanup runs after the servers'
	ca := testbed.SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := ca.ServerConfig(0)
	cfg.ClientAuth = tls.NoClientCert
	lingering := serveForProbe(t, true, cfg)
	plain := serveForProbe(t, false, cfg)

	for _, tc := range []struct {
		name string
		args []string
		exit int
		out  string
	}{
		{"linger", []string{"--ca", files.CA, "--trials", "3", "--interval", "5ms", lingering}, 0, "DELIVERED"},
		{"plain, flags after the address", []string{plain, "--ca", files.CA, "--trials", "3", "--interval", "5ms"}, 1, "RESET AFTER ALERT"},
		{"json", []string{"--json", "--ca", files.CA, "--trials", "2", "--interval", "5ms", "--upload", "64KiB", lingering}, 0, `"status": "delivered"`},
		{"untrusted server: inconclusive", []string{"--trials", "2", lingering}, 3, " -ca"},
		{"no address", []string{"--trials", "2"}, 2, "usage"},
		{"no port", []string{"127.0.0.1"}, 2, "want HOST:PORT"},
		{"missing --ca file", []string{"--ca", files.CA + ".missing", lingering}, 2, "no such file"},
		{"--ca file without certificates", []string{"--ca", files.ServerKey, lingering}, 2, "no PEM certificates"},
		{"unknown flag", []string{"--nonsense", lingering}, 2, "flag provided but not defined"},
		{"bad size", []string{"--upload", "1Ⱥ", lingering}, 2, `unknown unit "Ⱥ"`},
		{"bad mode", []string{"--provoke", "nonsense", lingering}, 2, "record or client-cert"},
		{"zero interval", []string{"--interval", "0s", lingering}, 2, "at least 1ms"},
		{"zero watch", []string{"--watch", "0s", lingering}, 2, "-watch 0s: want a positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := probeMain(context.Background(), tc.args, &stdout, &stderr)
			exit := 0
			var ex exitError
			if errors.As(err, &ex) {
				exit = int(ex)
			} else if err != nil {
				t.Fatalf("error %v; stderr %s", err, stderr.String())
			}
			if exit != tc.exit {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", exit, tc.exit, stdout.String(), stderr.String())
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tc.out) {
				t.Errorf("output does not contain %q:\n%s", tc.out, out)
			}
			if tc.name == "json" {
				var rep probe.Report
				if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
					t.Fatalf("--json output: %v\n%s", err, stdout.String())
				}
				if len(rep.Trials) != 2 || rep.Counts[probe.AlertFirst] != 2 || rep.Trials[0].ClientPort == 0 {
					t.Errorf("--json report: %+v", rep)
				}
			}
		})
	}
}

// TestProbeHelp: --help exits 0 (main turns flag.ErrHelp into 0) and
// documents every exit status the command uses.
func TestProbeHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := probeMain(context.Background(), []string{"--help"}, &stdout, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp", err)
	}
	for _, code := range []int{probe.ExitDelivered, probe.ExitNotDelivered, probe.ExitUsage, probe.ExitInconclusive} {
		if want := fmt.Sprintf("\n  %d  ", code); !strings.Contains(stderr.String(), want) {
			t.Errorf("--help does not document exit status %d:\n%s", code, stderr.String())
		}
	}
}

// serveForProbe starts a Go TLS server on loopback that reads until an
// error and closes, lingering or not, and returns its address.
func serveForProbe(t *testing.T, lingering bool, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if lingering {
		ln = testbed.Linger(t, linger.Must(linger.Config{}), ln)
	}
	return testbed.ServeTLS(t, ln, cfg, nil)
}
