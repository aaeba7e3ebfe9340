package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
)

// TestMain starts the runtime's network poller before any test, so that
// the probe tests' descriptor counts hold when one runs alone.
func TestMain(m *testing.M) {
	testbed.StartPoller()
	os.Exit(m.Run())
}

// TestHelperMain is not a test: run with LINGER_HELPER_ARGS set, it is the
// linger command, so that the tests below can run it as a process without
// building it.
func TestHelperMain(t *testing.T) {
	args := os.Getenv("LINGER_HELPER_ARGS")
	if args == "" {
		return
	}
	os.Args = append([]string{"linger"}, strings.Fields(args)...)
	main()
	os.Exit(0)
}

// runLinger runs the command with args and returns its exit status and
// standard error.
func runLinger(t *testing.T, args string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperMain$")
	cmd.Env = append(os.Environ(), "LINGER_HELPER_ARGS="+args)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatal(err)
	return -1, ""
}

// TestUsageErrors: a bad command line exits 2, as the flag package's own
// errors do, with a message naming the flag at fault, before any work.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"nosuchcommand", `unknown command "nosuchcommand"`},
		{"lab -nosuchflag", "flag provided but not defined: -nosuchflag"},
		{"lab --loss abc", `-loss "abc": not a loss rate`},
		{"lab --loss 150%", "not between 0% and 100%"},
		{"lab -trials -3", "-trials -3: must not be negative"},
		{"lab extra", `unexpected arguments ["extra"]`},
		{"serve extra", `unexpected arguments ["extra"]`},
		{"serve -addr 192.0.2.1:8443", "loopback only"},
		{"serve -nosuchflag", "flag provided but not defined"},
		{"bench -n -5 all", "-n -5: must be at least 1"},
		{"bench -hold-c 0 hold", "-hold-c 0: must be at least 1"},
		{"bench -d 0 flood", "-d 0s: must be positive"},
		{"bench nothing", `unknown benchmark "nothing"`},
		{"bench -clients cooperative,deafy all", `unknown client kind "deafy"`},
		{"bench -clients upload-1x flood", `-clients upload-1x: unknown unit "x"`},
		{"bench -modes loop,portible hold", `-modes: unknown mode "portible"`},
		{"bench -pin-modes linger,plane pin", `-pin-modes: unknown mode "plane"`},
		{"bench", "say what to measure"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			if strings.HasPrefix(tc.args, "bench") && runtime.GOOS != "linux" {
				t.Skip("linger bench runs on Linux only")
			}
			code, stderr := runLinger(t, tc.args)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and %q", code, stderr, tc.want)
			}
		})
	}
	// Asking for help is not an error.
	for _, args := range []string{"lab -h", "serve -h", "bench -h"} {
		if args == "bench -h" && runtime.GOOS != "linux" {
			continue
		}
		if code, stderr := runLinger(t, args); code != 0 || !strings.Contains(stderr, "usage: linger") {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 0 and the usage", args, code, stderr)
		}
	}
}

// TestServeStopsWithGoRun runs the README's "go run ./cmd/linger serve
// -plain &" and then kills the go command as "kill $!" would: the server
// must stop too, though the go command does not pass the signal on.
func TestServeStopsWithGoRun(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the server follows its parent's exit only on Linux")
	}
	if testing.Short() {
		t.Skip("skipping: compiles the command with go run (-short)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// Output to a file, not a pipe: a server left running would hold a
	// pipe open and keep cmd.Wait from returning.
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("go", "run", ".", "serve", "-plain", "-addr", addr)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	if !waitListening(addr, true, 2*time.Minute) {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("serve not listening on %s within 2 minutes:\n%s", addr, b)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-exited
	if !waitListening(addr, false, 10*time.Second) {
		t.Errorf("the server still listens on %s 10 s after go run was killed; stopping it", addr)
		stopListener(t, addr)
	}
}

// waitListening waits up to d for addr to accept connections (want) or to
// refuse them (!want), and reports whether it did.
func waitListening(addr string, want bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		if (err == nil) == want {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// stopListener sends SIGTERM to the linger process listening on addr,
// found with ss, so that a failing test leaves nothing running.
func stopListener(t *testing.T, addr string) {
	out, err := exec.Command("ss", "-Hltnp", "src", addr).Output()
	if err != nil {
		t.Logf("ss: %v", err)
		return
	}
	// users:(("linger",pid=123,fd=7))
	_, rest, ok := strings.Cut(string(out), "pid=")
	if !ok {
		return
	}
	pid, err := strconv.Atoi(rest[:strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })])
	if err == nil && strings.Contains(string(out), `"linger"`) {
		if p, err := os.FindProcess(pid); err == nil {
			p.Signal(syscall.SIGTERM)
		}
	}
}
