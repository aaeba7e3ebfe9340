package bench

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os/exec"
	"testing"
	"time"
)

// TestServerSockets: pin counts the sockets of its listener's address, not
// every socket with the same port number. A socket bound to that port on
// another loopback address, as an earlier benchmark's peer may have been
// (and be still, in TIME_WAIT), is not the server's.
func TestServerSockets(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss (iproute2) is not installed: pin cannot count sockets without it")
	}
	ln := listenLoopback(t)
	other := listenLoopback(t)
	addr := ln.Addr().(*net.TCPAddr)
	// Another program's connection, from 127.0.0.3 and the server's port.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3), Port: addr.Port}}
	stranger, err := d.Dial("tcp", other.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	// An earlier connection of the server's own, in TIME_WAIT: the server
	// closed first.
	old, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	oldSrv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	oldSrv.Close()
	io.Copy(io.Discard, old)
	old.Close()
	cli, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	waitTimeWait(t, addr)
	n, _, err := serverSockets(addr.AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d sockets counted, want 1: the accepted connection, not %v's nor the one in TIME_WAIT", n, stranger.LocalAddr())
	}
}

// waitTimeWait waits up to 2 s until a socket of addr is in TIME_WAIT.
func waitTimeWait(t *testing.T, addr *net.TCPAddr) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		out, err := exec.Command("ss", "-tnH", "state", "time-wait", fmt.Sprintf("( src %s )", addr)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(out)) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("premise: the server's first connection is not in TIME_WAIT after 2 s")
		}
	}
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
