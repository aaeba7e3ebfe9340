package testbed

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/pki"
)

// TestPlatformServers starts the servers written on a platform's own TLS
// library (OpenJDK, Node, Python, openssl s_server), TLS 1.2 and 1.3, and
// checks that each answers a client with a trusted certificate with 200,
// rejects one with an untrusted certificate, and runs with the extra
// environment its configuration gives.
func TestPlatformServers(t *testing.T) {
	ca := SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"java", "node", "python", "openssl"} {
		for _, v := range []struct {
			name string
			v    uint16
		}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}} {
			t.Run(kind+"/"+v.name, func(t *testing.T) { testPlatformServer(t, ca, files, kind, v.v) })
		}
	}
}

func testPlatformServer(t *testing.T, ca *pki.PKI, files pki.Files, kind string, version uint16) {
	s, stop, err := StartRealServer(RealServerConfig{Kind: kind, Files: files, Dir: t.TempDir(), Host: "127.0.0.1",
		Version: version, RequireCert: true, Env: []string{"LINGER_TESTBED_MARK=" + kind}})
	if errors.Is(err, ErrNoBinary) {
		t.Skipf("skipping %s: %v (./test.sh installs it as root)", kind, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("stopping %s: %v", kind, err)
		}
	}()
	t.Logf("%s on %s, pid %d", s.Version, s.Addr, s.PID)
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.PID))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(environ), "LINGER_TESTBED_MARK="+kind+"\x00") {
		t.Errorf("the server's environment lacks Env")
	}

	get := func(cert *tls.Certificate) (string, error) {
		cfg := ca.ClientConfig(cert, version)
		c, err := tls.Dial("tcp", s.Addr, cfg)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		return resp.Status, nil
	}
	if status, err := get(&ca.Client); err != nil || !strings.HasPrefix(status, "200") {
		t.Errorf("trusted client: status %q, error %v; want 200", status, err)
	}
	if status, err := get(&ca.Untrusted); err == nil {
		t.Errorf("untrusted client: status %q, want a rejection", status)
	} else {
		t.Logf("untrusted client: %v", err)
	}
}
