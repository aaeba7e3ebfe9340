// Package pki makes throw-away certificate authorities and the certificates
// that linger's TLS servers and clients present in the lab, the benchmarks,
// `linger serve` and the tests: one server certificate, a client certificate
// the authority signed and one it did not, so that a server can reject a
// client and send its alert.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throw-away certificate authority with a server certificate and
// two client certificates: one it signed and one it did not.
type PKI struct {
	// CA signed Server and Client.
	CA     *x509.Certificate
	CAPool *x509.CertPool
	// Server is valid for localhost, 127.0.0.1, ::1 and the hosts given to
	// NewPKI.
	Server tls.Certificate
	// Client is signed by CA: a server that requires CA accepts it.
	Client tls.Certificate
	// Untrusted is self-signed: a server that requires CA rejects it with an
	// unknown_ca alert (bad_certificate in TLS 1.2 from some servers).
	Untrusted tls.Certificate
}

// NewPKI makes a PKI. ECDSA P-256 keeps generation and handshakes fast.
func NewPKI(hosts ...string) (*PKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := template("linger test CA")
	caTmpl.IsCA = true
	caTmpl.BasicConstraintsValid = true
	caTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p := &PKI{CA: ca, CAPool: x509.NewCertPool()}
	p.CAPool.AddCert(ca)

	srv := template("localhost")
	srv.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	srv.DNSNames = []string{"localhost"}
	srv.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, h)
		}
	}
	if p.Server, err = issue(srv, ca, caKey); err != nil {
		return nil, err
	}
	cli := template("linger test client")
	cli.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if p.Client, err = issue(cli, ca, caKey); err != nil {
		return nil, err
	}
	if p.Untrusted, err = SelfSigned("untrusted client"); err != nil {
		return nil, err
	}
	return p, nil
}

// SelfSigned makes a self-signed client certificate: no chain leads from it
// to any CA, so a server that verifies client certificates rejects it.
func SelfSigned(commonName string) (tls.Certificate, error) {
	tmpl := template(commonName)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return issue(tmpl, nil, nil)
}

func template(cn string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

// issue signs tmpl with parent and parentKey, or self-signs it if parent is
// nil.
func issue(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ServerConfig returns a config for a server that requires a client
// certificate signed by the CA, pinned to one TLS version (0: Go's default
// range).
func (p *PKI) ServerConfig(version uint16) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.Server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.CAPool,
		MinVersion:   version,
		MaxVersion:   version,
	}
}

// ClientConfig returns a config for a client that trusts the CA and
// presents cert (nil: no certificate), pinned to one TLS version (0: Go's
// default range).
func (p *PKI) ClientConfig(cert *tls.Certificate, version uint16) *tls.Config {
	c := &tls.Config{
		RootCAs:    p.CAPool,
		ServerName: "localhost",
		MinVersion: version,
		MaxVersion: version,
	}
	if cert != nil {
		// GetClientCertificate, not Certificates: crypto/tls would withhold
		// a certificate that the server's list of acceptable CAs does not
		// cover, and the server would fail with certificate_required
		// instead of rejecting the certificate.
		cc := *cert
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cc, nil }
	}
	return c
}

// Files are the PKI written as PEM files, for curl, openssl and gnutls-cli.
type Files struct {
	CA                          string
	ServerCert, ServerKey       string
	ClientCert, ClientKey       string
	UntrustedCert, UntrustedKey string
}

// WriteFiles writes the PKI to dir as PEM files.
func (p *PKI) WriteFiles(dir string) (Files, error) {
	f := Files{
		CA:            filepath.Join(dir, "ca.pem"),
		ServerCert:    filepath.Join(dir, "server.pem"),
		ServerKey:     filepath.Join(dir, "server-key.pem"),
		ClientCert:    filepath.Join(dir, "client.pem"),
		ClientKey:     filepath.Join(dir, "client-key.pem"),
		UntrustedCert: filepath.Join(dir, "untrusted.pem"),
		UntrustedKey:  filepath.Join(dir, "untrusted-key.pem"),
	}
	if err := writePEM(f.CA, "CERTIFICATE", p.CA.Raw); err != nil {
		return f, err
	}
	for _, c := range []struct {
		cert     tls.Certificate
		crt, key string
	}{
		{p.Server, f.ServerCert, f.ServerKey},
		{p.Client, f.ClientCert, f.ClientKey},
		{p.Untrusted, f.UntrustedCert, f.UntrustedKey},
	} {
		if err := writePEM(c.crt, "CERTIFICATE", c.cert.Certificate[0]); err != nil {
			return f, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(c.cert.PrivateKey)
		if err != nil {
			return f, err
		}
		if err := writePEM(c.key, "PRIVATE KEY", der); err != nil {
			return f, err
		}
	}
	return f, nil
}

func writePEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}
