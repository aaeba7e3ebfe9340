package alert_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/pki"
)

// rejectingServer starts an HTTPS server on loopback that requires a client
// certificate from ca's CA, as a server of yours would.
func rejectingServer(ca *pki.PKI) (addr string, stop func()) {
	cfg := ca.ServerConfig(tls.VersionTLS13)
	cfg.NextProtos = []string{"h2", "http/1.1"} // as http.Server.ServeTLS offers
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }),
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }
}

// A client presents a certificate the server does not trust. With TLS 1.3
// its handshake completes first; the server's refusal arrives as an alert
// while the client is writing.
func ExampleWrap() {
	ca, err := pki.NewPKI()
	if err != nil {
		log.Fatal(err)
	}
	addr, stop := rejectingServer(ca)
	defer stop()

	raw, err := net.Dial("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	conn := alert.Wrap(tls.Client(raw, ca.ClientConfig(&ca.Untrusted, tls.VersionTLS13)))
	defer conn.Close()

	_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"))
	if err == nil {
		_, err = conn.Read(make([]byte, 512))
	}
	var ae *alert.Error
	if errors.As(err, &ae) {
		fmt.Printf("the server refused us: %s (alert %d)\n", ae.Description, ae.Code)
	}
	// Output: the server refused us: unknown certificate authority (alert 48)
}

// The client speaks HTTP/2 to this server, and the refusal comes on the
// first request of a new connection.
func ExampleNewHTTPClient() {
	ca, err := pki.NewPKI()
	if err != nil {
		log.Fatal(err)
	}
	addr, stop := rejectingServer(ca)
	defer stop()

	client := alert.NewHTTPClient(ca.ClientConfig(&ca.Untrusted, tls.VersionTLS13))
	defer client.CloseIdleConnections()
	_, err = client.Post("https://"+addr+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, 1<<20)))
	var ae *alert.Error
	if errors.As(err, &ae) {
		fmt.Printf("upload refused: %s (alert %d)\n", ae.Description, ae.Code)
	}
	// Output: upload refused: unknown certificate authority (alert 48)
}

// A Transport with bounds of its own: a server that accepts the TCP
// connection but never answers the ClientHello is given up on after 2 s
// instead of http.DefaultTransport's 10 s. Over HTTP/2, Response.TLS is set
// as with the stock transport.
func ExampleNewTransport() {
	ca, err := pki.NewPKI()
	if err != nil {
		log.Fatal(err)
	}
	cfg := ca.ServerConfig(tls.VersionTLS13)
	cfg.NextProtos = []string{"h2", "http/1.1"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go srv.Serve(ln)
	defer srv.Close()

	client := &http.Client{Transport: alert.NewTransport(&alert.Dialer{
		Config:           ca.ClientConfig(&ca.Client, tls.VersionTLS13),
		HandshakeTimeout: 2 * time.Second,
	})}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Proto, resp.TLS.NegotiatedProtocol)
	// Output: HTTP/2.0 h2
}
