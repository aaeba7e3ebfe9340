package lab

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/connerr"
	"github.com/linger-go/linger/internal/pki"
)

// trial is what one client run needs.
type trial struct {
	nw    *network
	sc    Scenario
	addr  string // the server's IP:port
	port  string
	ca    *pki.PKI
	files pki.Files
	body  string // a file holding sc.upload bytes, for curl and openssl
}

// result is one trial's outcome from the client's side.
type result struct {
	ok bool // the client application reported the alert first, or got everything
	// reached says whether the server's last word (the alert, the 413)
	// reached the client at all: 1 yes, 0 no, -1 unknown.
	reached int8
	first   string // a short name for the client's first error, or "ok"
}

// clientFunc runs one trial.
type clientFunc func(ctx context.Context, t *trial) result

var clientFuncs = map[string]clientFunc{
	"go-tls":      goTLS,
	"go-http":     goHTTP,
	"go-http-h2":  func(ctx context.Context, t *trial) result { return goHTTP2(ctx, t, false, true) },
	"go-alert":    func(ctx context.Context, t *trial) result { return goHTTP2(ctx, t, true, false) },
	"go-alert-h2": func(ctx context.Context, t *trial) result { return goHTTP2(ctx, t, true, true) },
	"curl":        curl,
	"openssl":     openssl,
}

// clientMissing says why a client cannot run here, or "" if it can.
func clientMissing(client string) string {
	switch client {
	case "curl", "openssl":
		if _, err := exec.LookPath(client); err != nil {
			return client + " is not installed"
		}
	}
	return ""
}

// clientCert is the certificate the scenario's client presents: the
// untrusted one where the server is to reject it.
func (t *trial) clientConfig() *tls.Config {
	var cert *tls.Certificate
	if t.sc.rejects {
		cert = &t.ca.Untrusted
	}
	// testbed's config sends the certificate even though the server's
	// list of acceptable CAs does not cover it; crypto/tls would withhold
	// it otherwise and the server would fail with certificate_required.
	return t.ca.ClientConfig(cert, t.sc.tlsVersion)
}

// probeTimeout bounds the read that looks for an alert still sitting in the
// client's socket after the application's first error.
const probeTimeout = 200 * time.Millisecond

// goTLS is a crypto/tls client.
func goTLS(ctx context.Context, t *trial) result {
	ctx, cancel := context.WithTimeout(ctx, t.nw.timeout)
	defer cancel()
	raw, err := t.nw.dial(ctx, "tcp", t.addr)
	if err != nil {
		return result{reached: -1, first: "dial: " + connerr.Name(err)}
	}
	defer raw.Close()
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	// Closing raw on cancellation unblocks everything below on Ctrl-C.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	tc := tls.Client(raw, t.clientConfig())
	payload := make([]byte, t.sc.upload)

	switch t.sc.ID {
	case "tls12":
		return goTLSConcurrent(tc, raw, payload)
	case "midstream":
		return goTLSSlowReader(tc, raw, payload)
	case "http413":
		head := fmt.Sprintf("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n"+
			"Content-Length: %d\r\n\r\n", len(payload))
		br := bufio.NewReader(tc)
		_, err := tc.Write(append([]byte(head), payload...))
		if err == nil {
			line, rerr := br.ReadString('\n')
			if strings.HasPrefix(line, "HTTP/1.1 413") {
				return result{ok: true, reached: 1, first: "ok"}
			}
			if rerr == nil {
				rerr = fmt.Errorf("unexpected response %q", line)
			}
			return result{reached: 0, first: connerr.Name(rerr)}
		}
		// Is the response still readable after the failed write?
		tc.SetReadDeadline(time.Now().Add(probeTimeout))
		line, _ := br.ReadString('\n')
		return result{reached: b2i(strings.HasPrefix(line, "HTTP/1.1 413")), first: connerr.Name(err)}
	}

	// Write the upload, then read the answer: the first error is what the
	// application reports.
	_, err = tc.Write(payload)
	if err == nil {
		_, err = tc.Read(make([]byte, 1))
	}
	if _, ok := alert.FromError(err); ok {
		return result{ok: true, reached: 1, first: connerr.Name(err)}
	}
	// Linux keeps data received before an RST readable, so the
	// alert may still be in the socket although the application reported
	// something else. A read error is sticky in crypto/tls, and a read
	// that failed had nothing left before the reset anyway.
	tc.SetReadDeadline(time.Now().Add(probeTimeout))
	_, perr := tc.Read(make([]byte, 1))
	_, reached := alert.FromError(perr)
	return result{reached: b2i(reached), first: connerr.Name(err)}
}

// goTLSConcurrent writes and reads in two goroutines, as a client that
// streams a request while watching for the answer does; the first error
// either of them gets is what the application reports. In TLS 1.2 both
// wait for the handshake, which is where the server rejects the client.
func goTLSConcurrent(tc *tls.Conn, raw net.Conn, payload []byte) result {
	errc := make(chan error, 2)
	go func() {
		_, err := tc.Write(payload)
		if err == nil {
			err = errNoError
		}
		errc <- err
	}()
	go func() {
		_, err := tc.Read(make([]byte, 1))
		errc <- err
	}()
	first := <-errc
	if first == errNoError {
		first = <-errc
		raw.Close()
	} else {
		raw.Close()
		<-errc
	}
	_, ok := alert.FromError(first)
	return result{ok: ok, reached: -1, first: connerr.Name(first)}
}

var errNoError = errors.New("no error")

// Slow reader pacing for the midstream scenario: 16 KiB every 4 ms is about
// 4 MB/s, so the 4 MiB take the client about a second to read, twice
// net/http's 500 ms.
const (
	slowChunk = 16 << 10
	slowPause = 4 * time.Millisecond
)

// goTLSSlowReader uploads in one goroutine while reading slowly in another,
// and succeeds if it reads all 4 MiB and then a clean end.
func goTLSSlowReader(tc *tls.Conn, raw net.Conn, payload []byte) result {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tc.Write(payload) // the server never reads it; it ends with the connection
	}()
	buf := make([]byte, slowChunk)
	var total int
	var err error
	for {
		var n int
		n, err = tc.Read(buf)
		total += n
		if err != nil {
			break
		}
		time.Sleep(slowPause)
	}
	raw.Close()
	<-done
	if total == midstreamBytes && err == io.EOF {
		return result{ok: true, reached: -1, first: "ok"}
	}
	first := connerr.Name(err)
	if err == io.EOF {
		first = "clean end after a short read"
	}
	return result{reached: -1, first: first}
}

// recorder sits between net/http and the TLS connection and remembers what
// the transport's read loop saw: whether it read the alert, and the start of
// the response. That is how the lab tells "the alert reached the client" from
// "the client reported it" for net/http, whose read loop sees the alert and
// closes the connection, so that the caller gets the write loop's error.
type recorder struct {
	net.Conn
	mu    sync.Mutex
	alert bool
	head  []byte
}

func (r *recorder) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.mu.Lock()
	if k := min(n, 32-len(r.head)); k > 0 {
		r.head = append(r.head, b[:k]...)
	}
	if _, ok := alert.FromError(err); ok {
		r.alert = true
	}
	r.mu.Unlock()
	return n, err
}

func (r *recorder) reached(sc Scenario) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sc.ID == "http413" {
		return bytes.HasPrefix(r.head, []byte("HTTP/1.1 413"))
	}
	return r.alert
}

// goHTTP POSTs the upload with net/http's stock transport over HTTP/1.1.
//
// It dials through DialTLSContext so that the lab can dial inside a
// namespace and record what the read loop sees, with the handshake the
// transport would do itself (tls.Client, HandshakeContext). An HTTP/1.1
// transport behaves the same whether or not the conn it gets is a
// *tls.Conn.
func goHTTP(ctx context.Context, t *trial) result {
	ctx, cancel := context.WithTimeout(ctx, t.nw.timeout)
	defer cancel()
	rec := &recorder{}
	cfg := t.clientConfig()
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	tr.DialTLSContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		tc, err := t.dialTLS(ctx, network, cfg)
		if err != nil {
			return nil, err
		}
		rec.Conn = tc
		return rec, nil
	}
	defer tr.CloseIdleConnections()
	resp, err := post(ctx, &http.Client{Transport: tr}, t)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if t.sc.ID == "http413" && resp.StatusCode == http.StatusRequestEntityTooLarge {
			return result{ok: true, reached: 1, first: "ok"}
		}
		return result{reached: b2i(rec.reached(t.sc)), first: "status " + resp.Status}
	}
	_, ok := alert.FromError(err)
	ok = ok && t.sc.rejects
	return result{ok: ok, reached: b2i(ok || rec.reached(t.sc)), first: connerr.Name(err)}
}

// dialTLS dials the trial's server on its network and completes the TLS
// handshake with cfg, as an http.Transport's own dial does.
func (t *trial) dialTLS(ctx context.Context, network string, cfg *tls.Config) (*tls.Conn, error) {
	raw, err := t.nw.dial(ctx, network, t.addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// goHTTP2 POSTs the upload with net/http's stock transport offering HTTP/2
// and HTTP/1.1 ("go-http-h2"), or with package alert's transport offering
// HTTP/2 and HTTP/1.1 ("go-alert-h2") or HTTP/1.1 only ("go-alert"); the
// server decides by ALPN. Whether the server's last word reached the client is
// asked of the connection after the request: crypto/tls keeps a read
// error, the alert included, and returns it to every later Read.
func goHTTP2(ctx context.Context, t *trial, withAlert, h2 bool) result {
	ctx, cancel := context.WithTimeout(ctx, t.nw.timeout)
	defer cancel()
	cfg := t.clientConfig()
	if h2 {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	} else {
		cfg.NextProtos = []string{"http/1.1"}
	}
	var rt http.RoundTripper
	var mu sync.Mutex
	var conn net.Conn // the connection the request was sent on
	if withAlert {
		at := alert.NewTransport(&alert.Dialer{Config: cfg,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) { return t.nw.dial(ctx, network, t.addr) }})
		defer at.CloseIdleConnections()
		rt = at
	} else {
		// The stock transport negotiates HTTP/2 when its dial returns a
		// *tls.Conn, as its own dial does.
		var protos http.Protocols
		protos.SetHTTP1(true)
		protos.SetHTTP2(true)
		tr := &http.Transport{TLSClientConfig: cfg, Protocols: &protos}
		tr.DialTLSContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return t.dialTLS(ctx, network, cfg)
		}
		defer tr.CloseIdleConnections()
		rt = tr
	}
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		mu.Lock()
		conn = info.Conn
		mu.Unlock()
	}}
	resp, err := post(httptrace.WithClientTrace(ctx, trace), &http.Client{Transport: rt}, t)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if t.sc.ID == "http413" && resp.StatusCode == http.StatusRequestEntityTooLarge {
			return result{ok: true, reached: 1, first: "ok"}
		}
		return result{reached: 0, first: "status " + resp.Status}
	}
	mu.Lock()
	c := conn
	mu.Unlock()
	// The premise of an HTTP/2 cell: the server offered h2 and the client
	// took it. A request that never got a connection (a TLS 1.2 handshake
	// refused) says nothing either way.
	if cs, isTLS := c.(interface{ ConnectionState() tls.ConnectionState }); isTLS && h2 && t.sc.rejects {
		if p := cs.ConnectionState().NegotiatedProtocol; p != "h2" {
			return result{reached: -1, first: fmt.Sprintf("negotiated %q, not h2", p)}
		}
	}
	_, ok := alert.FromError(err)
	ok = ok && t.sc.rejects
	reached := ok
	if !reached && c != nil && t.sc.rejects {
		c.SetReadDeadline(time.Now().Add(probeTimeout))
		_, rerr := c.Read(make([]byte, 1))
		_, reached = alert.FromError(rerr)
	}
	return result{ok: ok, reached: b2i(reached), first: connerr.Name(err)}
}

// post sends the trial's upload to the server.
func post(ctx context.Context, client *http.Client, t *trial) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", "https://localhost:"+t.port+"/",
		bytes.NewReader(make([]byte, t.sc.upload)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	return client.Do(req)
}

// curl runs curl with -v: its last line is what it reports, and its verbose
// lines show whether OpenSSL read the alert at all.
func curl(ctx context.Context, t *trial) result {
	ctx, cancel := context.WithTimeout(ctx, t.nw.timeout)
	defer cancel()
	args := []string{"-sS", "-v", "-o", "/dev/null", "-w", "\ncode=%{http_code}\n",
		"--max-time", fmt.Sprint(int(t.nw.timeout / time.Second)),
		"--cacert", t.files.CA, "--resolve", "localhost:" + t.port + ":" + t.nw.serverIP.String(),
		"--data-binary", "@" + t.body, "-H", "Content-Type: application/octet-stream"}
	if t.sc.rejects {
		args = append(args, "--cert", t.files.UntrustedCert, "--key", t.files.UntrustedKey)
	}
	switch t.sc.tlsVersion {
	case tls.VersionTLS13:
		args = append(args, "--tlsv1.3")
	case tls.VersionTLS12:
		args = append(args, "--tlsv1.2", "--tls-max", "1.2")
	}
	args = append(args, "https://localhost:"+t.port+"/")
	cmd := t.nw.command(ctx, "curl", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	verbose := stderr.String()
	last := lastLine(verbose, "curl: (")
	if t.sc.ID == "http413" {
		got := strings.Contains(stdout.String(), "code=413")
		// -v prints the response's status line as "< HTTP/1.1 413 ...".
		reached := got || strings.Contains(verbose, "< HTTP/1.1 413")
		if got && runErr == nil {
			return result{ok: true, reached: 1, first: "ok"}
		}
		if last == "" {
			last = "code " + strings.TrimSpace(strings.TrimPrefix(stdout.String(), "\ncode="))
		}
		return result{reached: b2i(reached), first: connerr.NameText(last)}
	}
	// OpenSSL's info callback, through -v, prints "TLSv1.3 (IN), TLS alert,
	// unknown CA (560)" when it reads the alert, whatever curl reports.
	reached := strings.Contains(verbose, "(IN), TLS alert")
	if last == "" {
		if runErr != nil {
			last = runErr.Error()
		} else {
			last = "no error"
		}
	}
	ok := strings.Contains(last, "alert")
	return result{ok: ok, reached: b2i(ok || reached), first: connerr.NameText(last)}
}

// openssl runs s_client with the upload on its standard input. -quiet
// implies -ign_eof, so s_client keeps the connection after its input ends
// and reports how the server ended it.
func openssl(ctx context.Context, t *trial) result {
	ctx, cancel := context.WithTimeout(ctx, t.nw.timeout)
	defer cancel()
	args := []string{"s_client", "-connect", t.addr, "-servername", "localhost", "-quiet",
		"-CAfile", t.files.CA, "-cert", t.files.UntrustedCert, "-key", t.files.UntrustedKey}
	switch t.sc.tlsVersion {
	case tls.VersionTLS13:
		args = append(args, "-tls1_3")
	case tls.VersionTLS12:
		args = append(args, "-tls1_2")
	}
	in, err := os.Open(t.body)
	if err != nil {
		return result{reached: -1, first: err.Error()}
	}
	defer in.Close()
	cmd := t.nw.command(ctx, "openssl", args...)
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, &out, &out
	runErr := cmd.Run()
	text := out.String()
	// s_client prints its errors in order; the first is what it reports:
	// "...:tlsv1 alert unknown ca:...:SSL alert number 48" for the alert,
	// "write:errno=104" or "read:errno=104" for a reset.
	var first string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, "error:") || strings.Contains(l, "errno=") {
			first = l
			break
		}
	}
	if first == "" {
		if runErr != nil {
			first = runErr.Error()
		} else {
			first = "no error"
		}
	}
	ok := strings.Contains(first, "alert")
	reached := ok || strings.Contains(text, "SSL alert number")
	return result{ok: ok, reached: b2i(reached), first: connerr.NameText(first)}
}

func lastLine(s, prefix string) string {
	var last string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			last = l
		}
	}
	return last
}

func b2i(b bool) int8 {
	if b {
		return 1
	}
	return 0
}
