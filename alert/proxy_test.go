package alert

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/linger-go/linger/internal/testbed"
)

// connectProxy is an HTTP proxy on loopback that tunnels CONNECT requests
// and counts them.
func connectProxy(t *testing.T) (*url.URL, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var connects atomic.Int32
	testbed.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil || req.Method != "CONNECT" {
			return
		}
		up, err := net.Dial("tcp", req.Host)
		if err != nil {
			return
		}
		defer up.Close()
		connects.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(up, c)
			up.(*net.TCPConn).CloseWrite()
		}()
		io.Copy(c, up)
		c.Close()
		<-done
	})
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}, &connects
}

// TestTransportProxy: a request that the transport's proxy function sends
// to a proxy goes through the tunnel as with the stock transport, over
// HTTP/2 where the server offers it, with Response.TLS set.
func TestTransportProxy(t *testing.T) {
	p := testbed.SharedPKI(t)
	srvCfg := p.ServerConfig(0)
	srvCfg.NextProtos = []string{"h2", "http/1.1"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	defer srv.Close()
	proxy, connects := connectProxy(t)

	tr := NewTransport(&Dialer{Config: p.ClientConfig(&p.Client, 0)})
	// http.ProxyFromEnvironment never proxies loopback; the test sets the
	// function the environment would.
	tr.h1.Proxy = http.ProxyURL(proxy)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if connects.Load() != 1 {
		t.Errorf("the proxy saw %d CONNECTs, want 1", connects.Load())
	}
	if resp.ProtoMajor != 2 || string(body) != "HTTP/2.0" || resp.TLS == nil {
		t.Errorf("through the proxy: %s (server saw %s), TLS %v; want HTTP/2 with Response.TLS", resp.Proto, body, resp.TLS != nil)
	}
}

// TestTransportProxyHandshakeAlert: through a proxy, a TLS 1.2 server's
// refusal of the client certificate, inside the handshake, is an *Error.
func TestTransportProxyHandshakeAlert(t *testing.T) {
	p := testbed.SharedPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.ServerConfig(tls.VersionTLS12))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	defer srv.Close()
	proxy, connects := connectProxy(t)
	tr := NewTransport(&Dialer{Config: p.ClientConfig(&p.Untrusted, tls.VersionTLS12)})
	tr.h1.Proxy = http.ProxyURL(proxy)
	defer tr.CloseIdleConnections()
	_, err = (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/")
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != 48 || connects.Load() != 1 {
		t.Errorf("through the proxy (%d CONNECTs): %v, want the unknown_ca alert as an *Error", connects.Load(), err)
	}
}
