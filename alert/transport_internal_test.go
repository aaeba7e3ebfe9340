package alert

import (
	"crypto/tls"
	"net"
	"net/url"
	"testing"

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

// TestLastH2Record: the Transport keeps, by address, the connection last
// dialed for HTTP/2 while it is open, only its alert once it closed with
// one, and nothing once it closed without; an older connection's Close
// leaves a newer one's record alone.
func TestLastH2Record(t *testing.T) {
	defer testbed.WaitFDs(t, testbed.OpenFDs())
	unknownCA := &Error{Code: 48, Description: "unknown certificate authority"}
	const addr = "server.test:443"
	tests := []struct {
		name      string
		alert     *Error
		close     bool
		wantAlert *Error
		wantConn  bool // the record still holds the connection
		wantEntry bool
	}{
		{"open, no alert", nil, false, nil, true, true},
		{"open, alert", unknownCA, false, unknownCA, true, true},
		{"closed, no alert", nil, true, nil, false, false},
		{"closed, alert", unknownCA, true, unknownCA, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTransport(nil)
			defer tr.CloseIdleConnections()
			nc := tr.track(addr, loopbackConn(t))
			if tt.alert != nil {
				nc.(*h2Conn).alert.Store(tt.alert)
			}
			if tt.close {
				nc.Close()
			}
			if got := tr.lastH2Alert(addr); got != tt.wantAlert {
				t.Errorf("lastH2Alert = %v, want %v", got, tt.wantAlert)
			}
			if got := tr.lastH2Alert("other.test:443"); got != nil {
				t.Errorf("lastH2Alert of another address = %v, want nil", got)
			}
			d, ok := tr.lastH2[addr]
			if ok != tt.wantEntry || (d.c != nil) != tt.wantConn {
				t.Errorf("record: present %v, holds the connection %v; want %v, %v", ok, d.c != nil, tt.wantEntry, tt.wantConn)
			}
			nc.Close()
		})
	}

	t.Run("older closes after a newer dial", func(t *testing.T) {
		tr := NewTransport(nil)
		defer tr.CloseIdleConnections()
		older := tr.track(addr, loopbackConn(t))
		newer := tr.track(addr, loopbackConn(t))
		defer newer.Close()
		older.(*h2Conn).alert.Store(unknownCA)
		older.Close()
		if got := tr.lastH2Alert(addr); got != nil {
			t.Errorf("lastH2Alert = %v after the older connection closed, want the newer one's: none", got)
		}
		newer.(*h2Conn).alert.Store(unknownCA)
		if got := tr.lastH2Alert(addr); got != unknownCA {
			t.Errorf("lastH2Alert = %v, want the newer connection's %v", got, unknownCA)
		}
	})

	t.Run("CloseIdleConnections forgets", func(t *testing.T) {
		tr := NewTransport(nil)
		nc := tr.track(addr, loopbackConn(t))
		defer nc.Close()
		nc.(*h2Conn).alert.Store(unknownCA)
		tr.CloseIdleConnections()
		if got := tr.lastH2Alert(addr); got != nil {
			t.Errorf("lastH2Alert = %v after CloseIdleConnections, want nil", got)
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
