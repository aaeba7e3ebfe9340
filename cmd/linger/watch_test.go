package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
)

// TestWatchUsage: a bad command line exits 2 with a message naming what is
// wrong; off Linux the command says it is Linux-only and exits 3.
func TestWatchUsage(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"watch --port 0", `port "0": want a number from 1 to 65535`},
		{"watch --port 443,x", `port "x"`},
		{"watch --port 70000", `port "70000"`},
		{"watch --interval 0s", "interval 0s: want a positive duration"},
		{"watch --duration -1s", "negative duration"},
		{"watch --max-flows 0", "max-flows 0"},
		{"watch extra", `unexpected argument "extra"`},
	} {
		t.Run(tc.args, func(t *testing.T) {
			code, stderr := runLinger(t, tc.args)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and %q", code, stderr, tc.want)
			}
		})
	}
	if code, stderr := runLinger(t, "watch -h"); code != 0 || !strings.Contains(stderr, "usage: linger watch") {
		t.Errorf("watch -h: exit %d, stderr:\n%s", code, stderr)
	}
	if runtime.GOOS != "linux" {
		if code, stderr := runLinger(t, "watch --duration 1s"); code != 3 || !strings.Contains(stderr, "needs Linux") {
			t.Errorf("exit %d, stderr:\n%s\nwant exit 3 and needs Linux", code, stderr)
		}
	}
}

// TestWatchCommand runs "linger watch --json --metrics" on loopback while
// the probe provokes 5 rejected certificates from a Go server that closes
// at once, then from one that lingers: the JSON summary counts the first
// server's 5 lost last words after an alert, the metrics say the same
// mid-run, a port nobody listens on is reported and watched, and the exit
// status is 1; then 0 for the lingering server alone.
func TestWatchCommand(t *testing.T) {
	testbed.RequireRoot(t, "linger watch (a packet socket)")
	ca := testbed.SharedPKI(t)
	for _, lingering := range []bool{false, true} {
		t.Run("linger="+strconv.FormatBool(lingering), func(t *testing.T) {
			addr := serveForProbe(t, lingering, ca.ServerConfig(tls.VersionTLS13))
			_, port, _ := net.SplitHostPort(addr)
			idle, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			_, unused, _ := net.SplitHostPort(idle.Addr().String())
			idle.Close() // nobody listens on it now
			metrics := freeAddr(t)
			var stdout, stderr bytes.Buffer
			done := make(chan error, 1)
			go func() {
				done <- watchMain(context.Background(), []string{"--port", port + "," + unused, "--interface", "lo",
					"--json", "--interval", "500ms", "--duration", "3s", "--metrics", metrics}, &stdout, &stderr)
			}()
			waitMetrics(t, metrics)
			rep, err := probe.Run(context.Background(), probe.Config{Addr: addr, Mode: probe.ModeClientCert,
				TLS:    &tls.Config{RootCAs: ca.CAPool, ServerName: "localhost", MinVersion: tls.VersionTLS13},
				Trials: 5, Upload: 256 << 10, Interval: 5 * time.Millisecond, Watch: 150 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			resets := 0
			for _, tr := range rep.Trials {
				if tr.Reset {
					resets++
				}
			}
			want := 5
			if lingering {
				want = 0
			}
			if resets != want {
				t.Fatalf("the probe saw %d resets; want %d", resets, want)
			}
			time.Sleep(200 * time.Millisecond)
			m := getMetrics(t, metrics)
			line := `linger_watch_lost_total{port="` + port + `",after="alert"} ` + strconv.Itoa(want)
			if !strings.Contains(m, line) {
				t.Errorf("metrics lack %q:\n%s", line, m)
			}
			err = <-done
			var ex exitError
			switch {
			case lingering && err != nil:
				t.Errorf("lingering: %v; want exit 0", err)
			case !lingering && !(errors.As(err, &ex) && ex == 1):
				t.Errorf("closing at once: %v; want exit status 1", err)
			}
			if !strings.Contains(stderr.String(), "nothing listens on port "+unused) {
				t.Errorf("stderr does not report port %s:\n%s", unused, stderr.String())
			}
			var summary watchLine
			sc := bufio.NewScanner(&stdout)
			lines := 0
			for sc.Scan() {
				lines++
				var l watchLine
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					t.Fatalf("line %d: %v: %s", lines, err, sc.Bytes())
				}
				if l.Type == "summary" {
					summary = l
				}
			}
			if lines < 3 || summary.Type != "summary" {
				t.Fatalf("%d lines and no summary:\n%s", lines, stdout.String())
			}
			if summary.Total.Lost != uint64(want) || summary.Total.LostAlert != uint64(want) || summary.Total.Opened < 5 {
				t.Errorf("summary %+v; want %d lost after an alert in at least 5 connections", summary.Total, want)
			}
			if len(summary.Ports) != 2 {
				t.Errorf("summary ports %+v; want both given ports", summary.Ports)
			}
			if summary.Kernel == nil {
				t.Error("summary without the kernel's counters")
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitMetrics waits for the metrics server, which starts after the
// watch's packet socket: once it answers, the watch is counting.
func waitMetrics(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("linger watch did not serve its metrics within 5 s")
}

func getMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	return string(b)
}
