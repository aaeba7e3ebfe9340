package alert_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/testbed"
)

// realAlert returns the error crypto/tls's own client returns when the server
// rejects its certificate during a TLS 1.2 handshake.
func realAlert(t *testing.T) error {
	t.Helper()
	p := testbed.SharedPKI(t)
	s := serveTLS(t, false, p.ServerConfig(tls.VersionTLS12), rejecting)
	tc := dialTLS(t, s.Addr, p.ClientConfig(&p.Untrusted, tls.VersionTLS12))
	defer tc.Close()
	err := tc.Handshake()
	if err == nil {
		t.Fatal("handshake with an untrusted certificate succeeded")
	}
	return err
}

// textAlert stands in for a future crypto/tls alert type with the same text.
type textAlert string

func (e textAlert) Error() string { return string(e) }

func TestFromError(t *testing.T) {
	real := realAlert(t)
	reset := &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)}
	wrapped := &alert.Error{Code: 48, Description: "unknown certificate authority", Err: reset}
	tests := []struct {
		name string
		err  error
		code uint8 // 0: no alert
	}{
		{"nil", nil, 0},
		{"plain error", errors.New("tls: unknown certificate authority"), 0},
		{"reset", reset, 0},
		{"EOF", io.EOF, 0},
		{"crypto/tls remote error", real, 48},
		{"remote error wrapped by fmt", fmt.Errorf("dial: %w", real), 48},
		{"remote error in url.Error", &url.Error{Op: "Post", URL: "https://x/", Err: real}, 48},
		{"remote error in errors.Join", errors.Join(reset, real), 48},
		{"AlertError in remote error", &net.OpError{Op: "remote error", Err: tls.AlertError(42)}, 42},
		{"same text, other type", &net.OpError{Op: "remote error", Err: textAlert("tls: bad certificate")}, 42},
		{"unknown code by text", &net.OpError{Op: "remote error", Err: textAlert("tls: alert(200)")}, 200},
		{"remote error, not an alert", &net.OpError{Op: "remote error", Err: errors.New("tls: something else")}, 0},
		{"remote error, nil Err", &net.OpError{Op: "remote error"}, 0},
		{"local error (an alert we sent)", &net.OpError{Op: "local error", Err: tls.AlertError(42)}, 0},
		{"bare AlertError (QUIC)", tls.AlertError(42), 0},
		{"*Error around a reset", wrapped, 48},
		{"*Error wrapped", fmt.Errorf("post: %w", wrapped), 48},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ae, ok := alert.FromError(tt.err)
			if ok != (tt.code != 0) {
				t.Fatalf("FromError(%v) ok = %v, want %v", tt.err, ok, tt.code != 0)
			}
			if !ok {
				if ae != nil {
					t.Errorf("FromError returned %v with ok false", ae)
				}
				return
			}
			if ae.Code != tt.code {
				t.Errorf("Code = %d, want %d", ae.Code, tt.code)
			}
			if want := strings.TrimPrefix(tls.AlertError(tt.code).Error(), "tls: "); ae.Description != want {
				t.Errorf("Description = %q, want %q", ae.Description, want)
			}
			// Err is the error the caller had: crypto/tls's own for a
			// remote error, the transport's for an *Error found in it.
			wantErr := tt.err
			if errors.As(tt.err, new(*alert.Error)) {
				wantErr = reset
			}
			if ae.Err != wantErr {
				t.Errorf("Err = %#v, want %#v", ae.Err, wantErr)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	real := realAlert(t)
	reset := &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)}
	tests := []struct {
		name string
		err  *alert.Error
		want string
	}{
		{"no Err", &alert.Error{Code: 42, Description: "bad certificate"}, "remote error: tls: bad certificate"},
		{"the alert itself", &alert.Error{Code: 48, Description: "unknown certificate authority", Err: real}, real.Error()},
		{"after a reset", &alert.Error{Code: 48, Description: "unknown certificate authority", Err: reset},
			"remote error: tls: unknown certificate authority; write tcp: write: connection reset by peer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
	// What matched before still matches through an *Error.
	e := &alert.Error{Code: 48, Err: reset}
	var op *net.OpError
	if !errors.Is(e, syscall.ECONNRESET) || !errors.As(e, &op) || op.Op != "write" {
		t.Errorf("errors.Is/As lost the transport error: %v", e)
	}
}

func TestName(t *testing.T) {
	for code, want := range map[uint8]string{48: "unknown_ca", 20: "bad_record_mac", 116: "certificate_required", 200: "alert_200"} {
		if got := alert.Name(code); got != want {
			t.Errorf("Name(%d) = %q, want %q", code, got, want)
		}
	}
}
