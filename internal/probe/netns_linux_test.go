package probe_test

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/netns"
	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
)

// TestImpairedPath probes across two network namespaces joined by a path
// with 10 ms of delay each way and 2 % loss, where a server closing at once
// loses alerts outright (its RST follows the alert, and a dropped alert is
// never retransmitted) and a lingering server still delivers every one.
// The server's own kernel counters show the RSTs, and a packet socket in
// its namespace must see a reset on exactly the connections the probe
// reported reset.
func TestImpairedPath(t *testing.T) {
	testbed.RequireRoot(t, "the impaired-path probe")
	testbed.CheckFDs(t)
	p := testbed.SharedPKI(t)
	pair, err := netns.NewPair(netns.PathConfig{Delay: 10 * time.Millisecond, Loss: 0.02})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pair.Close(); err != nil {
			t.Errorf("closing the namespaces: %v", err)
		}
	})
	dir := t.TempDir()
	files, err := p.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	host := pair.ServerIP.String()
	type cell struct {
		mode   probe.Mode
		server string
		upload int64
	}
	// 256 KiB keeps a trial well under a second on this path and is still
	// far more than a server reads before it rejects.
	var cells []cell
	for _, mode := range modes {
		for _, server := range []string{"go-close", "go-linger", "openssl"} {
			cells = append(cells, cell{mode, server, 256 << 10})
		}
	}
	for _, c := range cells {
		mode, server := c.mode, c.server
		t.Run(fmt.Sprintf("%s/%s/%dKiB", mode, server, c.upload>>10), func(t *testing.T) {
			var addr string
			switch server {
			case "openssl":
				addr = startOpenSSL(t, pair.Server.Command, host, files, mode == probe.ModeClientCert)
			default:
				ln, err := pair.Server.Listen("tcp", net.JoinHostPort(host, "0"))
				if err != nil {
					t.Fatal(err)
				}
				addr = startGo(t, ln, server == "go-linger", serverConfig(p, mode, 0))
			}
			// Segments of the previous run still in flight on the
			// delayed path would draw RSTs from a socket that is gone
			// and be counted against this one.
			time.Sleep(200 * time.Millisecond)
			before, err := pair.Server.Counters()
			if err != nil {
				t.Fatal(err)
			}
			_, port, _ := net.SplitHostPort(addr)
			var capture *testbed.RSTCapture
			if err := pair.Server.Do(func() (err error) {
				capture, err = testbed.CaptureRSTs("", atoi(port))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			tlsCfg := clientTLS(p, 0)
			tlsCfg.ServerName = host
			// A lost segment costs a retransmission timeout (200 ms at
			// least) before the RST it draws, so the watch is longer here.
			rep := run(t, probe.Config{Addr: addr, Mode: mode, TLS: tlsCfg, Trials: 8,
				Upload: c.upload, Dial: pair.Client.DialContext, Watch: time.Second})
			time.Sleep(100 * time.Millisecond)
			rsts := capture.RSTs()
			if err := capture.Close(); err != nil {
				t.Fatal(err)
			}
			for _, m := range wireMismatches(rep, rsts) {
				t.Errorf("the probe disagrees with the server's side of the wire: %s", m)
			}
			after, err := pair.Server.Counters()
			if err != nil {
				t.Fatal(err)
			}
			d := after.Sub(before)
			t.Logf("server namespace: %d RSTs sent, %d aborts on close, %d on data, %d retransmitted segments",
				d.OutRsts, d.AbortOnClose, d.AbortOnData, d.RetransSegs)
			checkReport(t, rep, server, 0)
			if server == "go-linger" && d.OutRsts != 0 {
				t.Errorf("a lingering server sent %d RSTs", d.OutRsts)
			}
		})
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
