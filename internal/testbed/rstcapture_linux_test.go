package testbed

import (
	"net"
	"testing"
	"time"
)

// TestCaptureRSTs: a server closing with SO_LINGER 0 sends one RST, and the
// capture counts it against the client's port; a clean close sends none.
// IPv4 and IPv6.
func TestCaptureRSTs(t *testing.T) {
	RequireRoot(t, "capturing packets on loopback")
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) { testCaptureRSTs(t, host) })
	}
}

func testCaptureRSTs(t *testing.T, host string) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("no %s: %v", host, err)
	}
	defer ln.Close()
	c, err := CaptureRSTs("lo", ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	ports := map[bool]int{}
	for _, reset := range []bool{true, false} {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		srv, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if reset {
			srv.(*net.TCPConn).SetLinger(0)
		}
		srv.Close()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		conn.Read(make([]byte, 1))
		conn.Close()
		ports[reset] = conn.LocalAddr().(*net.TCPAddr).Port
	}
	// The RST has been received (the read above returned), so it has
	// been seen leaving; give the capture's reader a moment to count it.
	deadline := time.Now().Add(5 * time.Second)
	for c.RSTs()[ports[true]] == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := c.RSTs()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got[ports[true]] != 1 || got[ports[false]] != 0 {
		t.Errorf("RSTs by client port %v; want 1 for %d (SO_LINGER 0) and none for %d (clean close)", got, ports[true], ports[false])
	}
}
