package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
)

func TestSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "1MiB": 1 << 20, "1M": 1 << 20, "1mb": 1 << 20,
		"64KiB": 64 << 10, "64k": 64 << 10, "2 GiB": 2 << 30, "0": 0,
	} {
		var s sizeFlag
		if err := s.Set(in); err != nil || int64(s) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, s, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1TiB", "-1", "1.5M", "x"} {
		var s sizeFlag
		if err := s.Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, s)
		}
	}
}

// TestProbeCommand runs the command against a lingering and a plainly
// closing Go server: the exit status is 0 for the first and 1 for the
// second, --json prints a report, and a bad command line exits 2.
func TestProbeCommand(t *testing.T) {
	before := testbed.OpenFDs()
	t.Cleanup(func() {
		// Registered first, so it runs after the servers' cleanups.
		deadline := time.Now().Add(5 * time.Second)
		for before >= 0 && testbed.OpenFDs() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if after := testbed.OpenFDs(); before >= 0 && after > before {
			t.Errorf("descriptors: %d before, %d after", before, after)
		}
	})
	pki := testbed.SharedPKI(t)
	files, err := pki.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := pki.ServerConfig(0)
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
		{"untrusted server", []string{"--trials", "2", lingering}, 2, "--ca"},
		{"no address", []string{"--trials", "2"}, 2, "usage"},
		{"bad mode", []string{"--provoke", "nonsense", lingering}, 2, "record or client-cert"},
		{"zero interval", []string{"--interval", "0s", lingering}, 2, "at least 1ms"},
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
				if len(rep.Trials) != 2 || rep.Counts[probe.AlertFirst] != 2 {
					t.Errorf("--json report: %+v", rep)
				}
			}
		})
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
