package lingercaddy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
)

// countFDs checks, when the test ends, that every descriptor it opened is
// closed. Call it first: cleanups run last registered first.
func countFDs(t *testing.T) {
	before := proc.OpenFDs()
	t.Cleanup(func() { testbed.WaitFDs(t, before) })
}

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Wrapper
		err      string
	}{
		{"bare", "linger", Wrapper{}, ""},
		{"every bound", `linger {
			idle_timeout 1s
			max_hold 10s
			max_discard 4MiB
			max_conns 100
			max_conns_per_ip 5
			shutdown_timeout 3s
		}`, Wrapper{
			IdleTimeout: caddy.Duration(time.Second), MaxHold: caddy.Duration(10 * time.Second),
			MaxDiscard: 4 << 20, MaxConns: 100, MaxConnsPerIP: 5, ShutdownTimeout: caddy.Duration(3 * time.Second),
		}, ""},
		{"days", "linger {\n max_hold 1d\n}", Wrapper{MaxHold: caddy.Duration(24 * time.Hour)}, ""},
		{"argument", "linger on", Wrapper{}, "wrong argument count"},
		{"unknown", "linger {\n linger_forever yes\n}", Wrapper{}, "unknown subdirective"},
		{"no value", "linger {\n max_hold\n}", Wrapper{}, "wrong argument count"},
		{"two values", "linger {\n max_hold 1s 2s\n}", Wrapper{}, "wrong argument count"},
		{"bad duration", "linger {\n idle_timeout soon\n}", Wrapper{}, "idle_timeout"},
		{"negative duration", "linger {\n idle_timeout -1s\n}", Wrapper{}, "negative"},
		{"bad size", "linger {\n max_discard lots\n}", Wrapper{}, "not a size"},
		{"negative count", "linger {\n max_conns -1\n}", Wrapper{}, "not a count"},
		{"per-address cap off", "linger {\n max_conns_per_ip -1\n}", Wrapper{MaxConnsPerIP: -1}, ""},
		{"negative per-address cap", "linger {\n max_conns_per_ip -2\n}", Wrapper{}, "not a count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w Wrapper
			err := w.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w != tc.want {
				t.Errorf("got %+v, want %+v", w, tc.want)
			}
		})
	}
}

func provision(t *testing.T, w *Wrapper) *observer.ObservedLogs {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := w.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	w.logger = zap.New(core)
	t.Cleanup(func() {
		if err := w.Cleanup(); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	return logs
}

func TestProvisionRejectsInvalidBounds(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	w := Wrapper{IdleTimeout: caddy.Duration(time.Minute), MaxHold: caddy.Duration(time.Second)}
	if err := w.Provision(ctx); !errors.Is(err, linger.ErrConfig) {
		t.Errorf("Provision: %v, want linger.ErrConfig", err)
	}
	w = Wrapper{ShutdownTimeout: -1}
	if err := w.Provision(ctx); err == nil {
		t.Error("Provision accepted a negative shutdown_timeout")
	}
}

// TestWrapListener: before tls, accepted connections are linger's, and
// Cleanup shuts the Closer down (later closes are plain); after tls, the
// module logs an error and leaves the listener alone.
func TestWrapListener(t *testing.T) {
	countFDs(t)
	w := &Wrapper{}
	logs := provision(t, w)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	wrapped := w.WrapListener(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn, err := wrapped.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := conn.(*linger.Conn); !ok {
		t.Errorf("accepted %T, want *linger.Conn", conn)
	}
	conn.Close()
	c.Close()
	if err := w.Cleanup(); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	if n := w.Closer().Stats().Outcomes[linger.PeerClosed]; n != 1 {
		t.Errorf("peer_closed = %d after Cleanup, want 1", n)
	}

	tl := tls.NewListener(ln, &tls.Config{})
	if got := w.WrapListener(tl); got != tl {
		t.Errorf("after tls, WrapListener returned %T, want the TLS listener unchanged", got)
	}
	if logs.FilterMessageSnippet("listed after tls").Len() != 1 {
		t.Errorf("no error logged for linger after tls; logs: %v", logs.All())
	}
}

// TestWrapListenerWarnsOnce: a listener whose connections are not TCP (here
// a Unix socket's; in Caddy, those of a wrapper listed before linger that
// hides the TCP connection) still serves, and the module says once that
// such connections close plainly.
func TestWrapListenerWarnsOnce(t *testing.T) {
	countFDs(t)
	w := &Wrapper{}
	logs := provision(t, w)
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wrapped := w.WrapListener(ln)
	for range 2 {
		c, err := net.Dial("unix", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn, err := wrapped.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		c.Close()
	}
	if n := logs.FilterMessageSnippet("not TCP").Len(); n != 1 {
		t.Errorf("%d warnings for connections that are not TCP, want 1; logs: %v", n, logs.All())
	}
}
