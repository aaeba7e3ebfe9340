package probe_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/lab"
	"github.com/linger-go/linger/internal/netns"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/probe"
	"github.com/linger-go/linger/internal/testbed"
)

// The README's table of how popular servers fare comes from
//
//	go test ./internal/probe -run TestServersTable -v -timeout 30m -args -table [-trials 20] [-upload 1048576] [-caddy PATH] [-old-probe PATH]
//
// as root. It is a measurement, not a check, so it runs only when asked.
var (
	tableFlag    = flag.Bool("table", false, "TestServersTable: measure the README's table of real servers")
	tableTrials  = flag.Int("trials", 20, "TestServersTable: trials a cell")
	tableCaddy   = flag.String("caddy", "", "TestServersTable: caddy binary (default: caddy from PATH, else no Caddy row)")
	tableOld     = flag.String("old-probe", "", "TestServersTable: a linger binary built from an older commit, run on nginx and HAProxy for the before column")
	tableServers = flag.String("servers", "", "TestServersTable: comma-separated servers (default all)")
	tableNets    = flag.String("nets", "loopback,impaired", "TestServersTable: networks: loopback, impaired")
	tableUpload  = flag.Int64("upload", probe.DefaultUpload, "TestServersTable: bytes each trial uploads")
)

type tableCell struct {
	net, tlsVersion string
	mode            probe.Mode
}

// TestServersTable probes each server in each cell and prints a Markdown
// table: the verdict, the outcomes, and how many connections the probe and
// the wire (a packet socket on the server's side) each saw reset.
func TestServersTable(t *testing.T) {
	if !*tableFlag {
		t.Skip("a measurement for the README; run with -args -table")
	}
	testbed.RequireRoot(t, "the servers table (packet capture, namespaces)")
	ca := testbed.SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	servers := []string{"nginx", "haproxy", "apache", "caddy", "go-close", "go-linger", "openssl"}
	if *tableServers != "" {
		servers = strings.Split(*tableServers, ",")
	}
	caddy := *tableCaddy
	if caddy == "" {
		caddy, _ = exec.LookPath("caddy")
	}
	var cells []tableCell
	for _, n := range strings.Split(*tableNets, ",") {
		cells = append(cells, tableCell{n, "1.3", probe.ModeRecord}, tableCell{n, "1.3", probe.ModeClientCert})
		if n == "loopback" {
			cells = append(cells, tableCell{n, "1.2", probe.ModeClientCert})
		}
	}
	var pair *netns.Pair
	if strings.Contains(*tableNets, "impaired") {
		if pair, err = netns.NewPair(lab.DefaultPath); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := pair.Close(); err != nil {
				t.Errorf("closing the namespaces: %v", err)
			}
		})
	}
	versions := map[string]string{}
	var rows []string
	// matrix[server][probe][cell] is the compact form the README shows.
	matrix := map[string]map[string]map[tableCell]string{}
	put := func(server, probeName string, c tableCell, text string) {
		if matrix[server] == nil {
			matrix[server] = map[string]map[tableCell]string{}
		}
		if matrix[server][probeName] == nil {
			matrix[server][probeName] = map[tableCell]string{}
		}
		matrix[server][probeName][c] = text
	}
	for _, server := range servers {
		if server == "caddy" && caddy == "" {
			t.Log("no caddy binary: no Caddy row (build one with GOBIN=$(mktemp -d) go install github.com/caddyserver/caddy/v2/cmd/caddy@latest)")
			continue
		}
		for _, c := range cells {
			name := fmt.Sprintf("%s/%s/TLS%s/%s", server, c.net, c.tlsVersion, c.mode)
			t.Run(name, func(t *testing.T) {
				addr, version, dial, command := tableServer(t, server, c, pair, files, caddy)
				versions[server] = version
				_, port, _ := net.SplitHostPort(addr)
				p, _ := strconv.Atoi(port)
				row := func(probeName, result string) {
					rows = append(rows, fmt.Sprintf("| %s | %s | TLS %s | %s | %s | %s |", server, netName(c.net), c.tlsVersion, c.mode, probeName, result))
				}
				if *tableOld != "" && (server == "nginx" || server == "haproxy") {
					capture := startCapture(t, c.net, pair, p)
					old := runOldProbe(t, command, addr, c, files)
					time.Sleep(100 * time.Millisecond)
					rsts := capture()
					row("before (main)", fmt.Sprintf("%s; wire: %d/%d connections reset", old, countPorts(rsts), *tableTrials))
					put(server, "before", c, fmt.Sprintf("%s; wire: %d reset", old, countPorts(rsts)))
				}
				capture := startCapture(t, c.net, pair, p)
				ver := tls.VersionTLS13
				if c.tlsVersion == "1.2" {
					ver = tls.VersionTLS12
				}
				cfg := clientTLS(ca, uint16(ver))
				cfg.ServerName = ""
				rep := run(t, probe.Config{Addr: addr, Mode: c.mode, TLS: cfg, Trials: *tableTrials, Upload: *tableUpload,
					Interval: 20 * time.Millisecond, Timeout: 20 * time.Second, Watch: probe.DefaultWatch, Dial: dial})
				time.Sleep(100 * time.Millisecond)
				rsts := capture()
				mism := wireMismatches(rep, rsts)
				for _, m := range mism {
					t.Log("disagrees with the wire: " + m)
				}
				row("after", fmt.Sprintf("%s; probe: %d reset, wire: %d reset; %d disagree", summarizeReport(rep),
					rep.Resets, countTrialPorts(rep, rsts), len(mism)))
				cell := fmt.Sprintf("%s; wire: %d reset", summarizeReport(rep), countTrialPorts(rep, rsts))
				if len(mism) > 0 {
					cell += fmt.Sprintf(" (**%d trials disagree**)", len(mism))
				}
				put(server, "after", c, cell)
			})
		}
	}
	var vs []string
	for s, v := range versions {
		vs = append(vs, s+": "+v)
	}
	sort.Strings(vs)
	fmt.Printf("\n%d trials a cell, upload %d KiB; %s\n\n", *tableTrials, *tableUpload>>10, strings.Join(vs, "; "))
	fmt.Println("| server | network | TLS | provoke | probe | verdict and counts |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		fmt.Println(r)
	}

	// The same, one row per server and probe, one column per cell.
	fmt.Println()
	head, rule := "| server | probe |", "| --- | --- |"
	for _, c := range cells {
		head += fmt.Sprintf(" %s, TLS %s, %s |", c.net, c.tlsVersion, c.mode)
		rule += " --- |"
	}
	fmt.Println(head)
	fmt.Println(rule)
	for _, server := range servers {
		for _, probeName := range []string{"before", "after"} {
			m := matrix[server][probeName]
			if m == nil {
				continue
			}
			line := fmt.Sprintf("| %s %s | %s |", server, versions[server], probeName)
			for _, c := range cells {
				line += " " + m[c] + " |"
			}
			fmt.Println(line)
		}
	}
}

func netName(n string) string {
	if n == "impaired" {
		return lab.DefaultPath.String()
	}
	return n
}

// tableServer starts one server for a cell and returns its address, its
// version, how to dial it and how to run a program next to the client.
func tableServer(t *testing.T, server string, c tableCell, pair *netns.Pair, files pki.Files, caddy string) (
	addr, version string, dial func(context.Context, string, string) (net.Conn, error),
	command func(context.Context, string, ...string) *exec.Cmd) {
	t.Helper()
	host, serverCmd, command := "127.0.0.1", exec.CommandContext, exec.CommandContext
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	port := 0
	if c.net == "impaired" {
		host, serverCmd, command, dial = pair.ServerIP.String(), pair.Server.Command, pair.Client.Command, pair.Client.DialContext
		port = 8443
		listen = func() net.Listener {
			ln, err := pair.Server.Listen("tcp", net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			return ln
		}
	}
	ver := uint16(tls.VersionTLS13)
	if c.tlsVersion == "1.2" {
		ver = tls.VersionTLS12
	}
	requireCert := c.mode == probe.ModeClientCert
	switch server {
	case "go-close", "go-linger":
		return startGo(t, listen(), server == "go-linger", serverConfig(testbed.SharedPKI(t), c.mode, ver)),
			"Go " + strings.TrimPrefix(runtimeVersion(), "go"), dial, command
	case "openssl":
		out, _ := exec.Command("openssl", "version").Output()
		return startOpenSSL(t, serverCmd, host, files, requireCert), strings.TrimSpace(string(out)), dial, command
	}
	cfg := testbed.RealServerConfig{Kind: server, Files: files, Host: host, Port: port, Version: ver,
		RequireCert: requireCert, Command: serverCmd, Dial: dial}
	if server == "caddy" {
		cfg.Binary = caddy
	}
	s := testbed.RunRealServer(t, cfg)
	return s.Addr, s.Version, dial, command
}

// startCapture counts RSTs from port on the server's side of the cell's
// network.
func startCapture(t *testing.T, network string, pair *netns.Pair, port int) func() map[int]int {
	t.Helper()
	if network == "impaired" {
		return testbed.CaptureServerRSTs(t, pair.Server.Do, port)
	}
	return testbed.CaptureServerRSTs(t, nil, port)
}

// runOldProbe runs an older linger binary's probe with --json and returns
// its verdict and counts.
func runOldProbe(t *testing.T, command func(context.Context, string, ...string) *exec.Cmd, addr string, c tableCell, files pki.Files) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := command(ctx, *tableOld, "probe", "--json", "--trials", strconv.Itoa(*tableTrials), "--interval", "20ms",
		"--upload", strconv.FormatInt(*tableUpload, 10),
		"--timeout", "20s", "--provoke", string(c.mode), "--tls", c.tlsVersion, "--ca", files.CA, addr)
	cmd.Stderr = os.Stderr
	out, _ := cmd.Output() // exit 1 and 2 are verdicts
	var rep struct {
		Counts  map[string]int `json:"counts"`
		Verdict struct {
			Status string `json:"status"`
		} `json:"verdict"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("old probe: %v: %s", err, out)
	}
	return strings.ToUpper(strings.ReplaceAll(rep.Verdict.Status, "_", " ")) + ": " + testbed.CountsText(rep.Counts)
}

func summarizeReport(r *probe.Report) string {
	counts := map[string]int{}
	for o, n := range r.Counts {
		counts[string(o)] = n
	}
	s := strings.ToUpper(strings.ReplaceAll(string(r.Verdict.Status), "_", " ")) + ": " + testbed.CountsText(counts)
	if len(r.HTTP) > 0 {
		var hs []string
		for h := range r.HTTP {
			hs = append(hs, h)
		}
		sort.Strings(hs)
		s += " (" + strings.Join(hs, ", ") + ")"
	}
	return s
}

func countPorts(rsts map[int]int) int {
	n := 0
	for _, c := range rsts {
		if c > 0 {
			n++
		}
	}
	return n
}

func countTrialPorts(r *probe.Report, rsts map[int]int) int {
	n := 0
	for _, tr := range r.Trials {
		if rsts[tr.ClientPort] > 0 {
			n++
		}
	}
	return n
}

func runtimeVersion() string { return runtime.Version() }
