package linger

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
)

// TestListenerSetsTCPUserTimeout: Config.TCPUserTimeout reaches the accepted
// socket, where grpc-go's own setting would not (it sets TCP_USER_TIMEOUT
// only on a *net.TCPConn); zero leaves the kernel's default (0).
func TestListenerSetsTCPUserTimeout(t *testing.T) {
	for _, tc := range []struct {
		set    time.Duration
		wantMS int
	}{
		{0, 0},
		{20 * time.Second, 20000},
		{1500 * time.Microsecond, 1},    // the option counts whole milliseconds
		{maxUserTimeout, math.MaxInt32}, // the longest the kernel's int of milliseconds holds
	} {
		t.Run(tc.set.String(), func(t *testing.T) {
			h := newHarness(t, Config{TCPUserTimeout: tc.set}, false)
			ln := h.Listener(listen(t))
			_, conn := accepted(t, ln)
			defer conn.Close()
			if got := testbed.TCPUserTimeout(t, conn); got != tc.wantMS {
				t.Errorf("TCP_USER_TIMEOUT = %d ms, want %d", got, tc.wantMS)
			}
		})
	}
	if _, err := New(Config{TCPUserTimeout: -time.Second}); !errors.Is(err, ErrConfig) {
		t.Errorf("New with a negative TCPUserTimeout: %v, want ErrConfig", err)
	}
}
