package linger

import (
	"context"
	"crypto/tls"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/netns"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/testbed"
)

// TestNoResets counts, in a network namespace of its own, the RSTs the
// server's kernel sends: TcpExtTCPAbortOnClose and Tcp OutRsts rise with
// each plain close of a socket holding unread data and stay flat with a
// lingering one. The same trials, a crypto/tls client uploading 1 MiB to a
// server that rejects its certificate, also count the alerts the client
// reported first: over a real link the plain close loses them.
func TestNoResets(t *testing.T) {
	testbed.RequireRoot(t, "the RST counters test")
	const trials = 50
	ca := testbed.SharedPKI(t)
	pair, err := netns.NewPair(netns.PathConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pair.Close()

	for _, lingers := range []bool{false, true} {
		name := "plain"
		if lingers {
			name = "linger"
		}
		t.Run(name, func(t *testing.T) {
			ln, err := pair.Server.Listen("tcp", netip.AddrPortFrom(pair.ServerIP, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			var h *harness
			if lingers {
				h = newHarness(t, Config{}, selectedPortable())
				ln = h.Listener(ln)
			}
			// The handshake fails on the untrusted certificate, and the
			// server closes the TCP connection, through linger or not.
			addr := testbed.ServeTLS(t, ln, ca.ServerConfig(tls.VersionTLS13), nil)

			before, err := pair.Server.Counters()
			if err != nil {
				t.Fatal(err)
			}
			alerts := 0
			for range trials {
				err := nsUpload(pair.Client, ca, addr)
				if err != nil && strings.Contains(err.Error(), "unknown certificate authority") {
					alerts++
				}
			}
			if h != nil {
				for range trials {
					h.next(t, 5*time.Second)
				}
			}
			after, err := pair.Server.Counters()
			if err != nil {
				t.Fatal(err)
			}
			d := after.Sub(before)
			t.Logf("%s close, %d trials over veth: alert first %d; server sent RSTs %d (TCPAbortOnClose %d, TCPAbortOnData %d)",
				name, trials, alerts, d.OutRsts, d.AbortOnClose, d.AbortOnData)
			if lingers {
				if d.OutRsts != 0 || d.AbortOnClose != 0 {
					t.Errorf("lingering server sent %d RSTs (%d aborts on close), want none", d.OutRsts, d.AbortOnClose)
				}
				if alerts != trials {
					t.Errorf("alert first in %d/%d trials, want all", alerts, trials)
				}
			} else if d.AbortOnClose == 0 || d.OutRsts == 0 {
				t.Errorf("plain close sent %d RSTs (%d aborts on close): the test no longer shows the failure", d.OutRsts, d.AbortOnClose)
			}
		})
	}
}

// nsUpload is goUpload from the client namespace.
func nsUpload(ns *netns.Namespace, ca *pki.PKI, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := ns.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	cfg := ca.ClientConfig(&ca.Untrusted, tls.VersionTLS13)
	cfg.ServerName = "192.0.2.1"
	conn := tls.Client(raw, cfg)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.Handshake(); err != nil {
		return err
	}
	if _, err := conn.Write(make([]byte, 1<<20)); err != nil {
		return err
	}
	_, err = io.ReadFull(conn, make([]byte, 1))
	return err
}
