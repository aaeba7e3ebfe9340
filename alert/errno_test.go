package alert

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

// TestWinsockReset checks the matching of Winsock's reset and abort codes,
// which isTransport uses on Windows, with the values Windows returns
// (WSAECONNABORTED 10053, WSAECONNRESET 10054), wrapped as the net
// package wraps them there.
func TestWinsockReset(t *testing.T) {
	wsa := func(errno syscall.Errno) error {
		return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("wsasend", errno)}
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"WSAECONNRESET", wsa(10054), true},
		{"WSAECONNABORTED", wsa(10053), true},
		{"WSAECONNRESET wrapped", fmt.Errorf("post: %w", wsa(10054)), true},
		{"bare errno", syscall.Errno(10054), true},
		{"WSAETIMEDOUT", wsa(10060), false},
		{"Linux ECONNRESET value", wsa(104), false},
		{"not an errno", errors.New("connection reset by peer"), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		if got := isWinsockReset(tt.err); got != tt.want {
			t.Errorf("%s: isWinsockReset(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}
