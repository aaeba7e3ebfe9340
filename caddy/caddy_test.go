package lingercaddy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(removeBins{m}) }

// removeBins removes the binaries build made once the tests have run.
type removeBins struct{ *testing.M }

func (m removeBins) Run() int {
	code := m.M.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	return code
}

// bins builds, once per test binary, Caddy with this module (as xcaddy
// would: cmd/caddy) and the linger command, into a temporary directory.
var bins struct {
	once         sync.Once
	dir          string
	caddy, probe string
	err          error
	took         time.Duration
}

func build(t *testing.T) (caddy, probe string) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: builds Caddy, minutes on a cold build cache (-short)")
	}
	bins.once.Do(func() {
		start := time.Now()
		bins.dir, bins.err = os.MkdirTemp("", "linger-caddy-")
		if bins.err != nil {
			return
		}
		bins.caddy = filepath.Join(bins.dir, "caddy")
		bins.probe = filepath.Join(bins.dir, "linger")
		for _, args := range [][]string{
			{"build", "-o", bins.caddy, "./cmd/caddy"},
			{"build", "-o", bins.probe, "github.com/linger-go/linger/cmd/linger"},
		} {
			out, err := exec.Command("go", args...).CombinedOutput()
			if err != nil {
				bins.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				return
			}
		}
		bins.took = time.Since(start)
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	t.Logf("Caddy and linger built in %v (go's build cache makes later builds fast)", bins.took.Round(time.Second))
	return bins.caddy, bins.probe
}

// caddyfile returns a Caddyfile for an HTTPS server on port that requires a
// client certificate signed by the test CA, over TLS 1.3, with wrappers as
// its listener_wrappers block ("" for none: stock Caddy). The site is named
// localhost, not 127.0.0.1: Caddy picks the TLS policy, client
// authentication included, by SNI, and clients send none for an address.
func caddyfile(dir string, port int, f pki.Files, wrappers string) string {
	return caddyfileAdmin(dir, port, f, wrappers, "off")
}

// caddyfileAdmin is caddyfile with Caddy's admin endpoint at admin ("off":
// none).
func caddyfileAdmin(dir string, port int, f pki.Files, wrappers, admin string) string {
	var lw string
	if wrappers != "" {
		lw = "\t\tlistener_wrappers {\n" + wrappers + "\n\t\t}\n"
	}
	return fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
	storage file_system %s
	servers {
		protocols h1 h2
%s	}
}

https://localhost:%d {
	bind 127.0.0.1
	tls %s %s {
		protocols tls1.3
		client_auth {
			mode require_and_verify
			trust_pool file %s
		}
	}
	respond "hello"
}
`, admin, filepath.Join(dir, "data"), lw, port, f.ServerCert, f.ServerKey, f.CA)
}

// startCaddy runs bin with the Caddyfile until the test ends and returns
// its address once it accepts connections, and its log.
func startCaddy(t *testing.T, bin, dir, name string, cfg func(port int) string) (string, *syncBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // Caddy takes the port; a race with another process is unlikely on loopback
	file := filepath.Join(dir, name+".Caddyfile")
	if err := os.WriteFile(file, []byte(cfg(port)), 0o600); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr, &log
		}
		select {
		case <-exited:
			t.Fatalf("caddy exited:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy not listening on %s within 30 s:\n%s", addr, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a process's output and a reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type probeReport struct {
	Counts  map[string]int `json:"counts"`
	Alerts  map[string]int `json:"alerts"`
	Verdict struct {
		Status string `json:"status"`
		Line   string `json:"line"`
	} `json:"verdict"`
}

// probe runs linger probe --provoke client-cert against addr.
func probe(t *testing.T, bin, addr string, f pki.Files, trials int) probeReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "probe", "--provoke", "client-cert", "--ca", f.CA, "--tls", "1.3",
		"--servername", "localhost", "--trials", fmt.Sprint(trials), "--interval", "10ms", "--json", addr).Output()
	var r probeReport
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("linger probe: %v; output %q", err, out)
	}
	return r
}

// curlAlerts runs curl with the untrusted certificate, uploading 1 MiB, and
// counts the trials in which it reported the server's alert.
func curlAlerts(t *testing.T, addr, dir string, f pki.Files, trials int) (int, string) {
	t.Helper()
	upload := filepath.Join(dir, "upload")
	if err := os.WriteFile(upload, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	n, other := 0, ""
	for range trials {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, _ := exec.CommandContext(ctx, "curl", "-sS", "--max-time", "10", "--cacert", f.CA,
			"--cert", f.UntrustedCert, "--key", f.UntrustedKey, "--data-binary", "@"+upload,
			"--resolve", "localhost:"+port+":127.0.0.1", "https://localhost:"+port+"/").CombinedOutput()
		cancel()
		if strings.Contains(strings.ToLower(string(out)), "alert unknown ca") {
			n++
		} else {
			other = strings.TrimSpace(string(out))
		}
	}
	return n, other
}

// TestCaddyDeliversAlert builds a real Caddy with the module and shows with
// linger probe and curl what a client uploading with an untrusted
// certificate gets: from stock Caddy a reset after the alert, from Caddy
// with linger listed before tls the alert and no reset; listed after tls
// the module says in Caddy's log that it can do nothing.
func TestCaddyDeliversAlert(t *testing.T) {
	caddy, linger := build(t)
	before := proc.OpenFDs()
	t.Cleanup(func() { testbed.WaitFDs(t, before) }) // after the Caddy processes stop
	const trials = 20
	dir := t.TempDir()
	ca, err := pki.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, haveCurl := exec.LookPath("curl")

	for _, tc := range []struct {
		name, wrappers string
		delivered      bool
	}{
		{"stock", "", false},
		{"linger", "\t\t\tlinger {\n\t\t\t\tidle_timeout 2s\n\t\t\t\tmax_discard 8MiB\n\t\t\t}\n\t\t\ttls", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, log := startCaddy(t, caddy, dir, tc.name, func(port int) string {
				return caddyfile(dir, port, files, tc.wrappers)
			})
			r := probe(t, linger, addr, files, trials)
			t.Logf("linger probe: %s; counts %v; alerts %v", r.Verdict.Status, r.Counts, r.Alerts)
			curl := "curl: not installed"
			if haveCurl == nil {
				n, other := curlAlerts(t, addr, dir, files, trials)
				curl = fmt.Sprintf("curl reported the alert in %d of %d trials", n, trials)
				if tc.delivered && n != trials {
					t.Errorf("%s; otherwise: %s", curl, other)
				}
			}
			t.Log(curl)
			switch {
			case tc.delivered && r.Verdict.Status != "delivered":
				t.Errorf("Caddy with linger: probe verdict %s, want delivered: %s\ncaddy log:\n%s", r.Verdict.Status, r.Verdict.Line, log)
			case !tc.delivered && r.Verdict.Status == "delivered":
				t.Errorf("stock Caddy delivered every alert without a reset, the premise of this test: has Caddy started lingering? %s", r.Verdict.Line)
			}
		})
	}

	t.Run("reload", func(t *testing.T) {
		// A config reload unloads the old config, whose module shuts its
		// Closer down, and the new config's module lingers in its place.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		admin := ln.Addr().String()
		ln.Close()
		var port int
		cfg := func(idle string) string {
			c := caddyfileAdmin(dir, port, files, "\t\t\tlinger {\n\t\t\t\tidle_timeout "+idle+"\n\t\t\t}\n\t\t\ttls", admin)
			return strings.Replace(c, "{\n\tadmin", "{\n\tdebug\n\tadmin", 1) // debug: the module logs its shutdown
		}
		addr, log := startCaddy(t, caddy, dir, "reload", func(p int) string { port = p; return cfg("2s") })
		if r := probe(t, linger, addr, files, 5); r.Verdict.Status != "delivered" {
			t.Fatalf("before the reload: %s", r.Verdict.Line)
		}
		file := filepath.Join(dir, "reload.Caddyfile")
		if err := os.WriteFile(file, []byte(cfg("3s")), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		out, err := exec.CommandContext(ctx, caddy, "reload", "--config", file, "--adapter", "caddyfile", "--address", admin).CombinedOutput()
		if err != nil {
			t.Fatalf("caddy reload: %v\n%s\ncaddy log:\n%s", err, out, log)
		}
		t.Logf("caddy reload took %v", time.Since(start).Round(time.Millisecond))
		r := probe(t, linger, addr, files, 5)
		t.Logf("after the reload: linger probe: %s; counts %v", r.Verdict.Status, r.Counts)
		if r.Verdict.Status != "delivered" {
			t.Errorf("after the reload: %s", r.Verdict.Line)
		}
		for _, want := range []string{
			`"logger":"caddy.listeners.linger","msg":"shut down"`,  // Cleanup of the old config
			`"msg":"connection closed"`, `"outcome":"peer_closed"`, // a Report per close, at debug level
		} {
			if !strings.Contains(log.String(), want) {
				t.Errorf("no %s in Caddy's log:\n%s", want, log)
			}
		}
	})

	t.Run("after tls", func(t *testing.T) {
		_, log := startCaddy(t, caddy, dir, "after", func(port int) string {
			return caddyfile(dir, port, files, "\t\t\tlinger")
		})
		if !strings.Contains(log.String(), "linger is listed after tls") {
			t.Errorf("no error in Caddy's log for linger placed after tls:\n%s", log)
		}
	})
}
