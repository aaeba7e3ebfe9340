package connerr

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestIsResetIsTimeout(t *testing.T) {
	opErr := func(err error) error {
		return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
	}
	for _, tc := range []struct {
		name           string
		err            error
		reset, timeout bool
	}{
		{"ECONNRESET", opErr(syscall.ECONNRESET), true, false},
		{"EPIPE", opErr(syscall.EPIPE), true, false},
		{"ECONNABORTED wrapped", fmt.Errorf("x: %w", opErr(syscall.ECONNABORTED)), true, false},
		{"deadline", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, false, true},
		{"context", fmt.Errorf("dial: %w", context.DeadlineExceeded), false, true},
		{"EOF", io.EOF, false, false},
		{"nil", nil, false, false},
		{"text only", errors.New("connection reset by peer"), false, false},
	} {
		if got := IsReset(tc.err); got != tc.reset {
			t.Errorf("%s: IsReset = %v, want %v", tc.name, got, tc.reset)
		}
		if got := IsTimeout(tc.err); got != tc.timeout {
			t.Errorf("%s: IsTimeout = %v, want %v", tc.name, got, tc.timeout)
		}
	}
}

func TestName(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "no error"},
		{&net.OpError{Op: "remote error", Err: tls.AlertError(48)}, "alert unknown certificate authority"},
		{tls.AlertError(48), "tls: unknown certificate authority"}, // sent, not received
		{errors.New("write tcp 127.0.0.1:1->127.0.0.1:2: write: connection reset by peer"), "connection reset"},
		{errors.New("curl: (55) Send failure: Connection reset by peer"), "connection reset"},
		{errors.New("curl: (55) getpeername() failed with errno 107: Transport endpoint is not connected"), "getpeername: not connected"},
		{errors.New("write: broken pipe"), "broken pipe"},
		{errors.New("dial tcp: connect: connection refused"), "connection refused"},
		{io.ErrUnexpectedEOF, "unexpected EOF"},
		{io.EOF, "EOF"},
		{errors.New("i/o timeout"), "timeout"},
		{errors.New("something else"), "something else"},
		{errors.New(long), strings.Repeat("é", 30) + "…"},
	} {
		if got := Name(tc.err); got != tc.want {
			t.Errorf("Name(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
