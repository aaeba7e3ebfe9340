package linger_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/alert"
)

// A complete HTTPS server that requires client certificates, behind a
// lingering listener, and a client that it rejects while the client is
// uploading 1 MiB. Behind a plain listener the rejection often reaches the
// client as a reset; here the client reads the server's TLS alert.
//
// Go's client sends no certificate that does not chain to one of the
// authorities the server advertises, so a Go client with an untrusted
// certificate sees certificate_required, as here, where curl with the same
// certificate sends it and sees unknown_ca.
func Example_server() {
	// A throw-away authority, and a server certificate it signed. A real
	// server loads these from files (tls.LoadX509KeyPair).
	caCert, caKey, err := newCA()
	if err != nil {
		log.Fatal(err)
	}
	serverCert, err := issue(caCert, caKey, "127.0.0.1")
	if err != nil {
		log.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(caCert)

	lc, err := linger.New(linger.Config{}) // the zero Config has the default bounds
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s\n", r.TLS.PeerCertificates[0].Subject.CommonName)
		}),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{serverCert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clientCAs,
			MinVersion:   tls.VersionTLS13,
		},
		ErrorLog: log.New(io.Discard, "", 0), // a real server logs the handshake errors
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(lc.Listener(ln), "", "") }()

	// A client without a certificate, uploading. alert.NewHTTPClient reports
	// the server's alert where net/http's own client would report the
	// connection's end.
	client := alert.NewHTTPClient(&tls.Config{RootCAs: clientCAs})
	_, err = client.Post("https://"+ln.Addr().String()+"/", "application/octet-stream",
		bytes.NewReader(make([]byte, 1<<20)))
	var ae *alert.Error
	if errors.As(err, &ae) {
		fmt.Println("rejected by the server:", ae.Description)
	} else {
		fmt.Println("no alert:", err)
	}

	// Stop the server first, then give lingering connections a moment.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	<-done
	lc.Shutdown(ctx)
	// Output: rejected by the server: certificate required
}

func newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "example CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, ip string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: ip},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
