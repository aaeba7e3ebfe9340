package linger

import (
	"errors"
	"syscall"
	"testing"
)

// TestUndelivered: only bytes of ours unacknowledged when linger, a socket
// error or a limit ended the connection count as a failure, not those a
// peer refused after ending the connection itself.
func TestUndelivered(t *testing.T) {
	timedOut := errors.New("recvfrom: " + syscall.ETIMEDOUT.Error())
	for _, c := range []struct {
		r    Report
		want bool
	}{
		{Report{Outcome: PeerClosed, Unacked: 0}, false},
		{Report{Outcome: PeerClosed, Unacked: 24}, false}, // curl resetting our close_notify after its FIN
		{Report{Outcome: PeerReset, Unacked: 24}, false},  // Go's client closing with our close_notify unread
		{Report{Outcome: PeerReset, Unacked: 24, Err: timedOut}, true},
		{Report{Outcome: PeerReset, Unacked: 0, Err: timedOut}, false},
		{Report{Outcome: Idle, Unacked: 1}, true},
		{Report{Outcome: Idle, Unacked: 0}, false},
		{Report{Outcome: HardCap, Unacked: 100}, true},
		{Report{Outcome: Budget, Unacked: 100}, true},
		{Report{Outcome: Released, Unacked: 100, Err: ErrMaxQueued}, true},
		{Report{Outcome: Shutdown, Unacked: 100}, true},
		{Report{Outcome: Plain, Unacked: -1, Err: ErrNotTCP}, false},
		{Report{Outcome: Idle, Unacked: -1}, false}, // unknown is not a failure counted
	} {
		if got := c.r.Undelivered(); got != c.want {
			t.Errorf("%v with Unacked %d, Err %v: Undelivered() = %v, want %v", c.r.Outcome, c.r.Unacked, c.r.Err, got, c.want)
		}
		var n counters
		n.add(&c.r)
		if s := n.snapshot(0); (s.Undelivered == 1) != c.want {
			t.Errorf("%v with Unacked %d: Stats.Undelivered = %d", c.r.Outcome, c.r.Unacked, s.Undelivered)
		}
	}
}
