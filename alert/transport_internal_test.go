package alert

import (
	"crypto/tls"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
)

// loopbackConn returns a *Conn over a real loopback TCP connection; no
// handshake is made, since only the Transport's bookkeeping is tested.
func loopbackConn(t *testing.T) *Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close(); raw.Close() })
	return Wrap(tls.Client(raw, &tls.Config{ServerName: "x"}))
}

// TestH2Dials: the Transport keeps, by address, the connections dialed
// for HTTP/2 while they are open, only the alerts of those that closed
// with one, for alertTTL and at most maxDead of them, and nothing of those
// that closed without; a request that got HTTP/2's fixed error is given an
// open connection's alert, else the latest dead one's.
func TestH2Dials(t *testing.T) {
	defer testbed.WaitFDs(t, proc.OpenFDs())
	unknownCA := &Error{Code: 48, Description: "unknown certificate authority"}
	badCert := &Error{Code: 42, Description: "bad certificate"}
	const addr = "server.test:443"
	type conn struct {
		alert *Error
		close bool
	}
	tests := []struct {
		name      string
		conns     []conn // dialed in this order
		want      *Error
		wantOpen  int
		wantDead  int
		wantEntry bool
	}{
		{"open, no alert", []conn{{nil, false}}, nil, 1, 0, true},
		{"open, alert", []conn{{unknownCA, false}}, unknownCA, 1, 0, true},
		{"closed, no alert", []conn{{nil, true}}, nil, 0, 0, false},
		{"closed, alert", []conn{{unknownCA, true}}, unknownCA, 0, 1, true},
		// A newer connection, dialed while a request was about to look
		// up the alert of the older one, does not hide it.
		{"older died of an alert, newer open", []conn{{unknownCA, true}, {nil, false}}, unknownCA, 1, 1, true},
		{"older closed without, newer open", []conn{{nil, true}, {nil, false}}, nil, 1, 0, true},
		{"an open connection's alert first", []conn{{badCert, true}, {unknownCA, false}}, unknownCA, 1, 1, true},
		{"the latest dead alert", []conn{{badCert, true}, {unknownCA, true}}, unknownCA, 0, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTransport(nil)
			defer tr.CloseIdleConnections()
			for _, c := range tt.conns {
				nc := tr.track(addr, loopbackConn(t))
				if c.alert != nil {
					nc.(*h2Conn).alert.Store(c.alert)
				}
				if c.close {
					nc.Close()
					nc.Close() // a second Close changes nothing
				} else {
					defer nc.Close()
				}
			}
			if got := tr.h2Alert(addr); got != tt.want {
				t.Errorf("h2Alert = %v, want %v", got, tt.want)
			}
			if got := tr.h2Alert("other.test:443"); got != nil {
				t.Errorf("h2Alert of another address = %v, want nil", got)
			}
			d, ok := tr.h2Dials[addr]
			if ok != tt.wantEntry {
				t.Fatalf("record present: %v, want %v", ok, tt.wantEntry)
			}
			if ok && (len(d.open) != tt.wantOpen || len(d.dead) != tt.wantDead) {
				t.Errorf("record: %d open, %d dead; want %d, %d", len(d.open), len(d.dead), tt.wantOpen, tt.wantDead)
			}
		})
	}

	t.Run("dead alerts expire", func(t *testing.T) {
		tr := NewTransport(nil)
		defer tr.CloseIdleConnections()
		nc := tr.track(addr, loopbackConn(t))
		nc.(*h2Conn).alert.Store(unknownCA)
		nc.Close()
		tr.h2Dials[addr].dead[0].at = time.Now().Add(-alertTTL - time.Second)
		if got := tr.h2Alert(addr); got != nil {
			t.Errorf("h2Alert = %v for an alert older than %v, want nil", got, alertTTL)
		}
	})

	t.Run("at most maxDead alerts", func(t *testing.T) {
		tr := NewTransport(nil)
		defer tr.CloseIdleConnections()
		for range maxDead + 3 {
			nc := tr.track(addr, loopbackConn(t))
			nc.(*h2Conn).alert.Store(unknownCA)
			nc.Close()
		}
		if n := len(tr.h2Dials[addr].dead); n != maxDead {
			t.Errorf("%d dead alerts kept, want %d", n, maxDead)
		}
	})

	t.Run("CloseIdleConnections forgets", func(t *testing.T) {
		tr := NewTransport(nil)
		nc := tr.track(addr, loopbackConn(t))
		defer nc.Close()
		nc.(*h2Conn).alert.Store(unknownCA)
		tr.CloseIdleConnections()
		if got := tr.h2Alert(addr); got != nil {
			t.Errorf("h2Alert = %v after CloseIdleConnections, want nil", got)
		}
	})
}

// TestH2Addr: the address looked up for a URL is the one the HTTP/2
// transport dials.
func TestH2Addr(t *testing.T) {
	tests := []struct{ url, want string }{
		{"https://example.com/", "example.com:443"},
		{"https://example.com:8443/x", "example.com:8443"},
		{"https://127.0.0.1:9000/", "127.0.0.1:9000"},
		{"https://[::1]/", "[::1]:443"},
		{"https://[::1]:8443/", "[::1]:8443"},
		{"https://bücher.example/", "xn--bcher-kva.example:443"},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := h2Addr(u); got != tt.want {
			t.Errorf("h2Addr(%s) = %q, want %q", tt.url, got, tt.want)
		}
	}
}
