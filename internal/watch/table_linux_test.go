package watch_test

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
)

// The table of docs/watch.md comes from
//
//	go test ./internal/watch -run TestTable -v -args -table [-table-n 20]
//
// as root: each server, driven by the probe (rejected client certificates,
// TLS 1.3, 256 KiB uploads) and by curl (1 MiB uploads with a rejected
// certificate), on loopback, and the Go servers across the impaired path.
var (
	tableFlag = flag.Bool("table", false, "TestTable: measure docs/watch.md's table")
	tableN    = flag.Int("table-n", 20, "TestTable: connections a cell")
)

func TestTable(t *testing.T) {
	if !*tableFlag {
		t.Skip("a measurement for docs/watch.md; run with -args -table")
	}
	testbed.RequireRoot(t, "the watch table (packet capture, namespaces)")
	ca, files := pkiFiles(t)
	rows := []string{"| server | network | driver | connections | driver saw reset | capture saw reset | watch: lost (alert / data / none) | of them after a FIN (driver / watch) | agree |",
		"| --- | --- | --- | --- | --- | --- | --- | --- | --- |"}
	row := func(server, network, driver string, tl tally) {
		agree := "yes"
		if len(tl.mismatches) > 0 || !within(tl.watchLost, tl.driverLost) {
			agree = fmt.Sprintf("no (%d)", len(tl.mismatches))
		}
		after := fmt.Sprintf("%d / %d", tl.driverAfterFIN, tl.watchAfterFIN)
		if driver == "curl" {
			after = fmt.Sprintf("– / %d", tl.watchAfterFIN)
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %d | %d | %d | %d (%d / %d / %d) | %s | %s |", server, network, driver, tl.conns,
			tl.driverLost, tl.captureLost, tl.watchLost, tl.kinds["lost_alert"], tl.kinds["lost_data"], tl.kinds["lost_none"], after, agree))
	}
	for _, kind := range []string{"go-close", "go-linger", "nginx", "haproxy", "apache", "openssl"} {
		t.Run(kind, func(t *testing.T) {
			var addr, name string
			switch kind {
			case "go-close", "go-linger":
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr, name = startGo(t, ln, kind == "go-linger", ca.ServerConfig(tls.VersionTLS13)), "Go, "+strings.TrimPrefix(kind, "go-")
			default:
				srv := testbed.RunRealServer(t, testbed.RealServerConfig{Kind: kind, Files: files, Host: "127.0.0.1", Version: tls.VersionTLS13, RequireCert: true})
				addr, name = srv.Addr, srv.Version
			}
			get := startWatch(t, loopback, portOf(t, addr))
			rep := runProbe(t, probe.Config{Addr: addr, Mode: probe.ModeClientCert, TLS: clientTLS(ca, tls.VersionTLS13), Trials: *tableN, Upload: 256 << 10})
			verdicts, rsts, _ := get()
			row(name, "loopback", "probe", compare(probeTruths(rep), verdicts, rsts))
			get = startWatch(t, loopback, portOf(t, addr))
			ts := curlUploads(t, addr, files, *tableN)
			verdicts, rsts, _ = get()
			curlTruth(ts, rsts)
			row(name, "loopback", "curl", compare(ts, verdicts, rsts))
		})
	}
	pair := newPair(t)
	for _, lingering := range []bool{false, true} {
		t.Run(fmt.Sprintf("impaired/linger=%v", lingering), func(t *testing.T) {
			host := pair.ServerIP.String()
			ln, err := pair.Server.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			addr := startGo(t, ln, lingering, ca.ServerConfig(0))
			time.Sleep(200 * time.Millisecond)
			get := startWatch(t, side{do: pair.Server.Do}, portOf(t, addr))
			cfg := clientTLS(ca, 0)
			cfg.ServerName = host
			rep := runProbe(t, probe.Config{Addr: addr, Mode: probe.ModeClientCert, TLS: cfg, Trials: *tableN,
				Upload: 256 << 10, Dial: pair.Client.DialContext, Watch: time.Second})
			time.Sleep(200 * time.Millisecond)
			verdicts, rsts, _ := get()
			name := "Go, close"
			if lingering {
				name = "Go, linger"
			}
			row(name, "10 ms each way, 2 % loss", "probe", compare(probeTruths(rep), verdicts, rsts))
		})
	}
	t.Logf("\n%s", strings.Join(rows, "\n"))
}
