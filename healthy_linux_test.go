package linger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/netns"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/testbed"
)

// healthyTrials is how many requests each client pattern makes per backend.
const healthyTrials = 10

// A healthyClient makes n successful HTTPS requests to url, all through
// the client namespace, and closes its connections the way a stock client
// does.
type healthyClient struct {
	name string
	// tool is the program the pattern runs, "" for Go's own client.
	tool string
	run  func(ctx context.Context, e *healthyEnv, n int) error
}

// healthyEnv is what a pattern needs to reach the server.
type healthyEnv struct {
	pair  *netns.Pair
	files pki.Files
	ca    *pki.PKI
	url   string
	host  string // host:port
}

// TestHealthyTrafficIsNoFailure: successful HTTPS requests, from curl,
// openssl, and Go's client in the ways browsers close too (keep-alive
// closed by the client, one request per connection, idle connections
// closed by the server's IdleTimeout, HTTP/2), end with no outcome but
// PeerClosed or PeerReset and never Undelivered, so Stats.Undelivered (the
// Prometheus failure counter) stays 0, although curl resets our
// close_notify after its close in every trial. The wire agrees that the
// server reset nothing: its namespace sends no RST at all.
func TestHealthyTrafficIsNoFailure(t *testing.T) {
	testbed.RequireRoot(t, "healthy traffic through a namespace pair, with each side's kernel counters")
	ca := testbed.SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := netns.NewPair(netns.PathConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pair.Close(); err != nil {
			t.Errorf("namespace pair: %v", err)
		}
	})
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			for _, cl := range healthyClients {
				t.Run(cl.name, func(t *testing.T) {
					if cl.tool != "" {
						if _, err := exec.LookPath(cl.tool); err != nil {
							t.Skipf("skipping %s: %s is not installed (test.sh installs it)", cl.name, cl.tool)
						}
					}
					healthyRun(t, be.portable, pair, ca, files, cl)
				})
			}
		})
	}
}

func healthyRun(t *testing.T, portable bool, pair *netns.Pair, ca *pki.PKI, files pki.Files, cl healthyClient) {
	h := newCountedHarness(t, Config{}, portable)
	ln, err := pair.Server.Listen("tcp", pair.ServerIP.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := ca.ServerConfig(0)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Write(bytes.Repeat([]byte("healthy "), 2048))
		}),
		TLSConfig: cfg,
		// The server closes the connections that clients keep idle, as a
		// browser's are closed; 200 ms keeps the test short.
		IdleTimeout: 200 * time.Millisecond,
		ErrorLog:    log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(h.Listener(ln), "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	env := &healthyEnv{pair: pair, files: files, ca: ca, host: ln.Addr().String()}
	env.url = "https://" + env.host + "/"

	sBefore, cBefore := nsCounters(t, pair)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.run(ctx, env, healthyTrials); err != nil {
		t.Fatalf("%s: %v", cl.name, err)
	}
	// One report per connection; the patterns that reuse connections
	// make fewer than healthyTrials, so collect until the Closer holds
	// none and no report has come for a moment.
	outcomes := map[Outcome]int{}
	var reports, closedUnacked int
	for {
		select {
		case r := <-h.reports:
			reports++
			outcomes[r.Outcome]++
			if r.Undelivered() {
				t.Errorf("undelivered: %v after %v, %d bytes unacknowledged, err %v", r.Outcome, r.Held, r.Unacked, r.Err)
			}
			if r.Outcome == PeerClosed && r.Unacked > 0 {
				closedUnacked++
			}
			continue
		case <-time.After(500 * time.Millisecond):
		}
		if h.Stats().Lingering == 0 {
			break
		}
	}
	if reports == 0 {
		t.Fatal("no connection was reported")
	}
	for o, n := range outcomes {
		if o != PeerClosed && o != PeerReset {
			t.Errorf("%d connections ended %v, a failure outcome, on successful traffic", n, o)
		}
	}
	if s := h.Stats(); s.Undelivered != 0 {
		t.Errorf("Stats.Undelivered = %d, want 0", s.Undelivered)
	}
	// The client's counters say how it closed: TCPAbortOnData counts its
	// resets of our bytes arriving after its close (curl's of our
	// close_notify), TCPAbortOnClose its closes with bytes unread. Some
	// PeerClosed reports with bytes unacknowledged are neither: bytes in
	// flight when the hand-off read SIOCOUTQ, acknowledged after.
	s, c := nsCounters(t, pair)
	s, c = s.Sub(sBefore), c.Sub(cBefore)
	t.Logf("%s: %d connections, outcomes %v, %d peer_closed with bytes unacknowledged; wire: server RSTs %d, client TCPAbortOnData %d, TCPAbortOnClose %d",
		cl.name, reports, outcomes, closedUnacked, s.OutRsts, c.AbortOnData, c.AbortOnClose)
	if s.OutRsts != 0 {
		t.Errorf("the server's namespace sent %d RSTs, want 0", s.OutRsts)
	}
}

func nsCounters(t *testing.T, p *netns.Pair) (server, client netns.Counters) {
	t.Helper()
	var err error
	if server, err = p.Server.Counters(); err != nil {
		t.Fatal(err)
	}
	if client, err = p.Client.Counters(); err != nil {
		t.Fatal(err)
	}
	return server, client
}

var healthyClients = []healthyClient{
	{name: "curl keep-alive, client closes first", tool: "curl", run: func(ctx context.Context, e *healthyEnv, n int) error {
		return e.curl(ctx, n)
	}},
	{name: "curl Connection: close, server closes first", tool: "curl", run: func(ctx context.Context, e *healthyEnv, n int) error {
		return e.curl(ctx, n, "-H", "Connection: close")
	}},
	{name: "curl HTTP/2", tool: "curl", run: func(ctx context.Context, e *healthyEnv, n int) error {
		return e.curl(ctx, n, "--http2")
	}},
	{name: "openssl s_client, server closes first", tool: "openssl", run: func(ctx context.Context, e *healthyEnv, n int) error {
		req := "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
		for range n {
			// -quiet implies -ign_eof: s_client waits for the server's
			// close after its request, then exits.
			cmd := e.pair.Client.Command(ctx, "openssl", "s_client", "-quiet", "-connect", e.host,
				"-CAfile", e.files.CA, "-cert", e.files.ClientCert, "-key", e.files.ClientKey)
			cmd.Stdin = strings.NewReader(req)
			out, err := cmd.Output()
			if err != nil || !bytes.Contains(out, []byte("200 OK")) {
				return fmt.Errorf("openssl s_client: %v: %.200q", err, out)
			}
		}
		return nil
	}},
	{name: "Go keep-alive, client closes its idle connections", run: func(ctx context.Context, e *healthyEnv, n int) error {
		tr := e.transport(false)
		defer tr.CloseIdleConnections()
		return e.goGets(ctx, tr, n, false)
	}},
	{name: "Go one request per connection", run: func(ctx context.Context, e *healthyEnv, n int) error {
		tr := e.transport(false)
		tr.DisableKeepAlives = true
		return e.goGets(ctx, tr, n, false)
	}},
	{name: "Go HTTP/2 idle until the server closes it", run: func(ctx context.Context, e *healthyEnv, n int) error {
		tr := e.transport(true)
		defer tr.CloseIdleConnections()
		if err := e.goGets(ctx, tr, n, true); err != nil {
			return err
		}
		time.Sleep(600 * time.Millisecond) // three IdleTimeouts
		return nil
	}},
	{name: "Go HTTP/1.1 idle until the server closes it", run: func(ctx context.Context, e *healthyEnv, n int) error {
		tr := e.transport(false)
		defer tr.CloseIdleConnections()
		if err := e.goGets(ctx, tr, n, true); err != nil {
			return err
		}
		time.Sleep(600 * time.Millisecond)
		return nil
	}},
}

// curl runs curl n times, one connection each, with the client certificate.
func (e *healthyEnv) curl(ctx context.Context, n int, args ...string) error {
	for range n {
		a := append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
			"--cacert", e.files.CA, "--cert", e.files.ClientCert, "--key", e.files.ClientKey}, args...)
		cmd := e.pair.Client.Command(ctx, "curl", append(a, e.url)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || string(out) != "200" {
			return fmt.Errorf("curl %s: %v %s %s", strings.Join(args, " "), err, out, strings.TrimSpace(stderr.String()))
		}
	}
	return nil
}

func (e *healthyEnv) transport(h2 bool) *http.Transport {
	cfg := e.ca.ClientConfig(&e.ca.Client, 0)
	return &http.Transport{
		DialContext:         e.pair.Client.DialContext,
		TLSClientConfig:     cfg,
		ForceAttemptHTTP2:   h2,
		MaxIdleConnsPerHost: healthyTrials,
	}
}

// goGets makes n GETs through tr, reading each body to its end; at once
// when parallel (several connections, then idle), else one after another.
func (e *healthyEnv) goGets(ctx context.Context, tr *http.Transport, n int, parallel bool) error {
	client := &http.Client{Transport: tr}
	get := func() error {
		req, err := http.NewRequestWithContext(ctx, "GET", e.url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	if !parallel {
		for range n {
			if err := get(); err != nil {
				return err
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = get() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
