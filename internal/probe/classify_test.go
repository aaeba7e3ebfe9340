package probe

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

// Errors as crypto/tls and the net package return them.
var (
	alertErr = func(code uint8) error { return &net.OpError{Op: "remote error", Err: tls.AlertError(code)} }
	readErr  = func(errno syscall.Errno) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
	}
	writeErr = func(errno syscall.Errno) error {
		return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", errno)}
	}
	deadline = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	ok200    = []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	nginx400 = []byte("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n<html>\r\n<head><title>400 The SSL " +
		"certificate error</title></head>\r\n")
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    observation
		want classified // alert compared by code only
		code uint8
		err  string // a substring of the error text; "" wants none
	}{
		{"alert, FIN, nothing after", observation{mode: ModeRecord, read: alertErr(20), tail: io.EOF},
			classified{outcome: AlertFirst, fin: true}, 20, ""},
		{"alert, FIN, then a reset the socket showed", observation{mode: ModeRecord, read: alertErr(20), tail: io.EOF,
			wireReset: true}, classified{outcome: AlertAfterError, fin: true, reset: true, resetSeenBy: "wire"}, 20, "after the server's FIN"},
		{"alert, FIN, then a write broke", observation{mode: ModeRecord, read: alertErr(20), tail: io.EOF,
			write: writeErr(syscall.EPIPE)}, classified{outcome: AlertAfterError, fin: true, reset: true, resetSeenBy: "write"}, 20, "broken pipe"},
		{"alert, then a reset instead of a FIN", observation{mode: ModeRecord, read: alertErr(20),
			tail: readErr(syscall.ECONNRESET)}, classified{outcome: AlertAfterError, reset: true, resetSeenBy: "read"}, 20, "reset by peer"},
		{"the write's reset comes first", observation{mode: ModeClientCert, certAsked: true, read: alertErr(48),
			tail: readErr(syscall.ECONNRESET), write: writeErr(syscall.ECONNRESET)},
			classified{outcome: AlertAfterError, reset: true, resetSeenBy: "write"}, 48, "write"},
		{"nginx: HTTP 400, close_notify, FIN", observation{mode: ModeClientCert, certAsked: true, read: io.EOF, tail: io.EOF,
			head: nginx400, received: int64(len(nginx400))},
			classified{outcome: HTTPAnswer, fin: true, httpStatus: "HTTP/1.1 400 Bad Request (400 The SSL certificate error)"}, 0, ""},
		{"HTTP 200 after an untrusted certificate", observation{mode: ModeClientCert, certAsked: true, read: io.EOF, tail: io.EOF,
			head: ok200, received: int64(len(ok200))},
			classified{outcome: HTTPAccepted, fin: true, httpStatus: "HTTP/1.1 200 OK"}, 0, "accepted the certificate"},
		{"HTTP 204, then a reset, after an untrusted certificate", observation{mode: ModeClientCert, certAsked: true, read: io.EOF,
			tail: io.EOF, head: []byte("HTTP/1.0 204 No Content\r\n\r\n"), wireReset: true},
			classified{outcome: HTTPAccepted, fin: true, reset: true, resetSeenBy: "wire", httpStatus: "HTTP/1.0 204 No Content"}, 0, "HTTP/1.0 204 No Content"},
		{"HTTP 200 in record mode is an answer, not an acceptance", observation{mode: ModeRecord, read: io.EOF, tail: io.EOF,
			head: ok200}, classified{outcome: HTTPAnswer, fin: true, httpStatus: "HTTP/1.1 200 OK"}, 0, ""},
		{"HTTP 2000 is no 2xx", observation{mode: ModeClientCert, certAsked: true, read: io.EOF, tail: io.EOF,
			head: []byte("HTTP/1.1 2000 Odd\r\n\r\n")}, classified{outcome: HTTPAnswer, fin: true, httpStatus: "HTTP/1.1 2000 Odd"}, 0, ""},
		{"HTTP answer, then a reset", observation{mode: ModeClientCert, certAsked: true, read: io.EOF, tail: io.EOF,
			head: nginx400, wireReset: true}, classified{outcome: HTTPThenReset, fin: true, reset: true, resetSeenBy: "wire",
			httpStatus: "HTTP/1.1 400 Bad Request (400 The SSL certificate error)"}, 0, "FIN"},
		{"the write took the reset, then the read returned EOF: no FIN", observation{mode: ModeRecord, read: io.EOF,
			tail: io.EOF, write: writeErr(syscall.ECONNRESET)},
			classified{outcome: Reset, reset: true, resetSeenBy: "write"}, 0, "reset by peer"},
		{"alert, then the write took a reset that came before any FIN", observation{mode: ModeRecord,
			read: alertErr(20), tail: io.EOF, write: writeErr(syscall.ECONNRESET)},
			classified{outcome: AlertAfterError, reset: true, resetSeenBy: "write"}, 20, "reset by peer"},
		{"reset, no alert", observation{mode: ModeRecord, read: readErr(syscall.ECONNRESET)},
			classified{outcome: Reset, reset: true, resetSeenBy: "read"}, 0, "reset by peer"},
		{"timeout", observation{mode: ModeRecord, read: deadline}, classified{outcome: Timeout}, 0, "timeout"},
		{"EOF, no alert", observation{mode: ModeRecord, read: io.EOF, tail: io.EOF}, classified{outcome: EOF, fin: true}, 0, "EOF"},
		{"EOF, then a reset", observation{mode: ModeRecord, read: io.EOF, tail: io.EOF, wireReset: true},
			classified{outcome: Reset, fin: true, reset: true, resetSeenBy: "wire"}, 0, "FIN"},
		{"data that is not HTTP: the certificate was accepted", observation{mode: ModeClientCert, certAsked: true,
			read: io.EOF, head: []byte("hello"), received: 5}, classified{outcome: EOF, fin: true}, 0, "accept the certificate"},
		{"TLS 1.2: rejected inside the handshake, FIN", observation{mode: ModeClientCert, certAsked: true,
			handshake: alertErr(48), read: alertErr(48), tail: io.EOF},
			classified{outcome: AlertFirst, inHandshake: true, fin: true}, 48, ""},
		{"TLS 1.2: rejected inside the handshake, reset", observation{mode: ModeClientCert, certAsked: true,
			handshake: alertErr(48), read: alertErr(48), tail: readErr(syscall.ECONNRESET)},
			classified{outcome: AlertAfterError, inHandshake: true, reset: true, resetSeenBy: "read"}, 48, "reset"},
		{"our own verification failed", observation{mode: ModeClientCert, certAsked: true,
			handshake: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}},
			classified{outcome: HandshakeFailed}, 0, " -ca"},
		{"no certificate asked for", observation{mode: ModeClientCert},
			classified{outcome: HandshakeFailed}, 0, "did not ask"},
		{"record mode, a certificate is required (TLS 1.2)", observation{mode: ModeRecord, certAsked: true,
			handshake: alertErr(40)}, classified{outcome: HandshakeFailed}, 0, " -provoke client-cert"},
		{"record mode, a certificate is required (alert 116)", observation{mode: ModeRecord, certAsked: true,
			handshake: alertErr(116)}, classified{outcome: HandshakeFailed}, 0, " -provoke client-cert"},
		{"record mode, asked, then the handshake timed out", observation{mode: ModeRecord, certAsked: true,
			handshake: deadline}, classified{outcome: HandshakeFailed}, 0, "timed out"},
		{"cancelled in the handshake", observation{mode: ModeClientCert, certAsked: true, handshake: io.EOF, cancelled: true},
			classified{outcome: HandshakeFailed}, 0, "timed out"},
		{"terminal escapes in an error", observation{mode: ModeRecord,
			read: errors.New("x509: certificate is valid for \x1b[2Jevil, not good")},
			classified{outcome: EOF}, 0, `\x1b[2Jevil`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := classify(tc.o)
			var code uint8
			if got.alert != nil {
				code = got.alert.Code
			}
			if code != tc.code {
				t.Errorf("alert %d, want %d", code, tc.code)
			}
			gotErr := got.err
			got.alert, got.err, tc.want.err = nil, "", ""
			if got != tc.want {
				t.Errorf("classify:\n got %+v\nwant %+v", got, tc.want)
			}
			if tc.err == "" && gotErr != "" || !strings.Contains(gotErr, tc.err) {
				t.Errorf("error %q, want one containing %q", gotErr, tc.err)
			}
			if strings.ContainsRune(gotErr, 0x1b) {
				t.Errorf("error %q carries an escape character", gotErr)
			}
		})
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"unknown_ca (48)":          "unknown_ca (48)",
		"café, 日本":                 "café, 日本",
		"\x1b[31mred\x1b[0m":       `\x1b[31mred\x1b[0m`,
		"a\u202eb":                 `a\u202eb`,
		"bad \xff utf-8":           `bad \xff utf-8`,
		"tab\tnew\nline\r\x00\x7f": `tab\x09new\x0aline\x0d\x00\x7f`,
		"\u009b2J":                 `\u009b2J`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStatusLine(t *testing.T) {
	for in, want := range map[string]string{
		"HTTP/1.1 400 Bad Request\r\nServer: x\r\n\r\n": "HTTP/1.1 400 Bad Request",
		"HTTP/1.0 403 Forbidden":                        "HTTP/1.0 403 Forbidden",
		"HTTP/1.1 400 \x1b]0;owned\x07\r\n":             `HTTP/1.1 400 \x1b]0;owned\x07`,
		"HTTP/1.1 200 " + strings.Repeat("x", 500):      "HTTP/1.1 200 " + strings.Repeat("x", maxStatusLine-13),
		"hello":  "",
		"":       "",
		"HTTP/2": "",
	} {
		if got := statusLine([]byte(in)); got != want {
			t.Errorf("statusLine(%q) = %q, want %q", in, got, want)
		}
	}
}
