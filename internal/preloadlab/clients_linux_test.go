package preloadlab

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/connerr"
	"github.com/linger-go/linger/internal/pki"
)

// A target is the server a client trial reaches, and how to reach it: on
// loopback, or from the client's namespace of a netns.Pair.
type target struct {
	host, port string
	version    uint16
	ca         *pki.PKI
	files      pki.Files
	body       string // a file of uploadBytes bytes
	command    func(ctx context.Context, name string, args ...string) *exec.Cmd
	dial       func(ctx context.Context, network, addr string) (net.Conn, error)
}

// uploadBytes is what every client sends after its handshake, as in the
// issue's measurement: far more than the server reads before it rejects the
// certificate.
const uploadBytes = 1 << 20

// A verdict is one trial from the client application's side: whether the
// first error it reported was the server's alert, and that error in short.
type verdict struct {
	alert bool
	first string
}

// clients are the programs the seed's matrix runs, each presenting the
// untrusted certificate and uploading uploadBytes.
var clients = []struct {
	name string
	run  func(ctx context.Context, t target) verdict
}{
	{"gnutls-cli", gnutlsCLI},
	{"curl", curlClient},
	{"python-ssl", pythonClient},
	{"go-tls", goClient},
}

// clientPrograms are the programs a client needs on PATH.
var clientPrograms = map[string]string{"gnutls-cli": "gnutls-cli", "curl": "curl", "python-ssl": "python3"}

// writeBody writes the upload: lines of printable bytes, since gnutls-cli
// sends its standard input as it reads it.
func writeBody(dir string) (string, error) {
	line := strings.Repeat("x", 1023) + "\n"
	p := filepath.Join(dir, "upload")
	return p, os.WriteFile(p, []byte(strings.Repeat(line, uploadBytes/len(line))), 0o600)
}

// firstLine returns the first line of out that contains one of marks.
func firstLine(out string, marks ...string) string {
	for _, l := range strings.Split(out, "\n") {
		for _, m := range marks {
			if strings.Contains(l, m) {
				return strings.TrimSpace(l)
			}
		}
	}
	return ""
}

// gnutlsCLI sends the upload from its standard input. It reports a
// received alert as "*** Received alert [46]: ..." followed by "*** Fatal
// error: A TLS fatal alert has been received.", and a reset as an error in
// the push or pull function.
func gnutlsCLI(ctx context.Context, t target) verdict {
	prio := map[uint16]string{tls.VersionTLS12: "NORMAL:-VERS-ALL:+VERS-TLS1.2", tls.VersionTLS13: "NORMAL:-VERS-ALL:+VERS-TLS1.3"}[t.version]
	cmd := t.command(ctx, "gnutls-cli", "--x509cafile", t.files.CA, "--x509certfile", t.files.UntrustedCert,
		"--x509keyfile", t.files.UntrustedKey, "--priority", prio, "-p", t.port, t.host)
	return runProgram(cmd, t.body, func(out string) verdict {
		first := firstLine(out, "*** Fatal error", "*** Received alert", "Error in the", "*** Server has terminated")
		return verdict{alert: strings.Contains(first, "alert"), first: first}
	})
}

// curlClient POSTs the upload. Its last "curl: (N)" line is what it
// reports: "... alert ..." for the alert, "Send failure: Connection reset
// by peer" or "getpeername() failed" for a reset.
func curlClient(ctx context.Context, t target) verdict {
	args := []string{"-sS", "-o", "/dev/null", "--max-time", "20", "--cacert", t.files.CA,
		"--cert", t.files.UntrustedCert, "--key", t.files.UntrustedKey,
		"--data-binary", "@" + t.body, "-H", "Content-Type: application/octet-stream"}
	if t.version == tls.VersionTLS13 {
		args = append(args, "--tlsv1.3")
	} else {
		args = append(args, "--tlsv1.2", "--tls-max", "1.2")
	}
	cmd := t.command(ctx, "curl", append(args, "https://"+net.JoinHostPort(t.host, t.port)+"/")...)
	return runProgram(cmd, "", func(out string) verdict {
		first := firstLine(out, "curl: (")
		return verdict{alert: strings.Contains(first, "alert"), first: first}
	})
}

// pythonScript is a Python ssl client that writes the upload and then
// reads, printing the first exception it gets: an ssl.SSLError naming the
// alert ("[SSL: SSLV3_ALERT_CERTIFICATE_UNKNOWN] ..."), or a reset.
const pythonScript = `import socket, ssl, sys
host, port, ca, cert, key, ver, body = sys.argv[1:8]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[ver]
data = open(body, "rb").read()
try:
    with socket.create_connection((host, int(port)), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(data)
            s.recv(1)
    print("error: none")
except Exception as e:
    print("error: %s: %s" % (type(e).__name__, e))
`

func pythonClient(ctx context.Context, t target) verdict {
	ver := map[uint16]string{tls.VersionTLS12: "TLSv1_2", tls.VersionTLS13: "TLSv1_3"}[t.version]
	cmd := t.command(ctx, "python3", "-c", pythonScript, t.host, t.port, t.files.CA, t.files.UntrustedCert,
		t.files.UntrustedKey, ver, t.body)
	return runProgram(cmd, "", func(out string) verdict {
		first := strings.TrimPrefix(firstLine(out, "error: "), "error: ")
		return verdict{alert: strings.Contains(first, "ALERT"), first: first}
	})
}

// goClient is a crypto/tls client that writes the upload and then reads.
func goClient(ctx context.Context, t target) verdict {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	raw, err := t.dial(ctx, "tcp", net.JoinHostPort(t.host, t.port))
	if err != nil {
		return verdict{first: "dial: " + connerr.Name(err)}
	}
	defer raw.Close()
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	tc := tls.Client(raw, t.ca.ClientConfig(&t.ca.Untrusted, t.version))
	tc.SetDeadline(deadline)
	_, err = tc.Write(make([]byte, uploadBytes))
	if err == nil {
		_, err = tc.Read(make([]byte, 1))
	}
	_, ok := alert.FromError(err)
	return verdict{alert: ok, first: connerr.Name(err)}
}

// runProgram runs cmd with stdin from the file in (none if ""), and judges
// its combined output.
func runProgram(cmd *exec.Cmd, in string, judge func(string) verdict) verdict {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if in != "" {
		f, err := os.Open(in)
		if err != nil {
			return verdict{first: err.Error()}
		}
		defer f.Close()
		cmd.Stdin = f
	}
	runErr := cmd.Run()
	v := judge(out.String())
	if v.first == "" {
		v.first = "no error"
		if runErr != nil {
			v.first = runErr.Error()
		}
	}
	return v
}
