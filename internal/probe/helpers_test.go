package probe_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	testbed.StartPoller()
	goleak.VerifyTestMain(m)
}

// startGo serves TLS with cfg on ln until the test ends, reading and
// discarding what a client sends and closing the connection on the first
// error, as servers do: at once, or through linger's listener. It returns
// the server's address.
func startGo(t testing.TB, ln net.Listener, lingering bool, cfg *tls.Config) string {
	t.Helper()
	if lingering {
		ln = testbed.Linger(t, linger.Must(linger.Config{}), ln)
	}
	return testbed.ServeTLS(t, ln, cfg, nil)
}

// startOpenSSL runs openssl s_server on host (port 0: it picks one) and
// returns the address it listens on. With requireCert it demands a client
// certificate from the test CA and fails on any other. command makes the
// process (exec.CommandContext, or a namespace's Command); the process is
// killed and waited for when the test ends.
func startOpenSSL(t testing.TB, command func(ctx context.Context, name string, args ...string) *exec.Cmd,
	host string, files pki.Files, requireCert bool) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	args := []string{"s_server", "-accept", net.JoinHostPort(host, "0"),
		"-cert", files.ServerCert, "-key", files.ServerKey}
	if requireCert {
		args = append(args, "-CAfile", files.CA, "-Verify", "1", "-verify_return_error")
	}
	cmd := command(ctx, "openssl", args...)
	// s_server serves what it reads on stdin to the client and stops at
	// its end, so stdin stays open and empty until the test ends.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		// The first "ACCEPT host:port" line gives the port; everything
		// after (what clients sent, errors) is read and dropped so that
		// s_server never blocks on a full pipe.
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ACCEPT "); ok {
				addrc <- strings.TrimSpace(a)
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() {
		cancel()
		stdin.Close()
		<-drained
		cmd.Wait()
	})
	select {
	case a := <-addrc:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("openssl s_server did not say where it listens")
	case <-drained:
		t.Fatal("openssl s_server exited")
	}
	return ""
}

// run probes addr with cfg's TLS settings and logs the trials and the
// summary.
func run(t testing.TB, cfg probe.Config) *probe.Report {
	t.Helper()
	if cfg.Trials == 0 {
		cfg.Trials = 10
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Watch == 0 {
		// On loopback an RST answers data within a millisecond; the
		// margin is for a loaded machine.
		cfg.Watch = 150 * time.Millisecond
	}
	var lines []string
	cfg.OnTrial = func(tr probe.Trial) { lines = append(lines, probe.FormatTrial(tr)) }
	rep, err := probe.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	rep.WriteSummary(&b)
	t.Logf("%s\n%s", strings.Join(lines, "\n"), b.String())
	return rep
}
