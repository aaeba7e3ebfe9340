package linger

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
)

// TestLastWordArrives is the engine's reason to exist: the peer is still
// sending when the server writes its last word and closes, and the peer
// still reads every byte of it followed by a clean EOF, not a reset.
func TestLastWordArrives(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{}, be.portable)
			ln := listen(t)
			srv, cli := pair(t, ln, nil)
			if _, err := cli.Write(make([]byte, 100)); err != nil { // left unread by the server
				t.Fatal(err)
			}
			last := bytes.Repeat([]byte("last word "), 10000)
			if _, err := srv.Write(last); err != nil {
				t.Fatal(err)
			}
			stop := send(cli, 256<<10, 0)
			if err := h.Close(srv); err != nil {
				t.Fatalf("Close: %v", err)
			}
			cli.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(cli)
			stop()
			if err != nil {
				t.Fatalf("client read %d of %d bytes, then: %v", len(got), len(last), err)
			}
			if !bytes.Equal(got, last) {
				t.Fatalf("client read %d bytes, want %d", len(got), len(last))
			}
			cli.Close()
			r := h.next(t, 5*time.Second)
			if r.Outcome != PeerClosed {
				t.Errorf("outcome %v (%v), want %v", r.Outcome, r.Err, PeerClosed)
			}
			if r.Discarded < 100 {
				t.Errorf("discarded %d bytes, want at least the 100 left unread", r.Discarded)
			}
			if !be.portable && r.Unacked != 0 {
				t.Errorf("Unacked = %d, want 0: the client read everything", r.Unacked)
			}
			if r.RemoteAddr.String() != cli.LocalAddr().String() {
				t.Errorf("RemoteAddr %v, want %v", r.RemoteAddr, cli.LocalAddr())
			}
		})
	}
}

// TestCloseWakesBlockedCalls: a goroutine blocked in Read on the handed-off
// connection returns net.ErrClosed, as after a plain Close.
func TestCloseWakesBlockedCalls(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{}, be.portable)
			srv, cli := pair(t, listen(t), nil)
			errc := make(chan error, 1)
			go blockingRead(srv, errc)
			// A Read that starts after the hand-off returns net.ErrClosed
			// too, so the test first waits until Read is parked in the
			// poller: only then is it a wake-up that is tested.
			waitParked(t, "linger.blockingRead")
			select {
			case err := <-errc:
				t.Fatalf("Read returned %v before the hand-off", err)
			default:
			}
			if err := h.Close(srv); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("blocked Read returned %v, want net.ErrClosed", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("blocked Read did not return")
			}
			cli.Close()
			h.next(t, 5*time.Second)
		})
	}
}

// blockingRead reads one byte from c and sends the error; it is a named
// function so that waitParked can find its goroutine.
func blockingRead(c net.Conn, errc chan<- error) {
	_, err := c.Read(make([]byte, 1))
	errc <- err
}

// waitParked waits until a goroutine running fn is blocked on the network
// poller ("IO wait" in a stack dump), or fails the test after 5 s.
func waitParked(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(5 * time.Second)
	for {
		dump := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(dump, "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, fn+"(") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine in %s parked in IO wait after 5 s", fn)
		}
		time.Sleep(time.Millisecond)
	}
}

// pipeConn is a non-TCP connection with a RemoteAddr.
type pipeConn struct{ net.Conn }

func TestBadInput(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{}, be.portable)
			ln := listen(t)

			t.Run("close twice", func(t *testing.T) {
				srv, cli := pair(t, ln, nil)
				if err := h.Close(srv); err != nil {
					t.Fatal(err)
				}
				if err := h.Close(srv); !errors.Is(err, net.ErrClosed) {
					t.Errorf("second Close = %v, want net.ErrClosed", err)
				}
				cli.Close()
				if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed {
					t.Errorf("outcome %v, want %v", r.Outcome, PeerClosed)
				}
			})
			t.Run("already closed", func(t *testing.T) {
				srv, _ := pair(t, ln, nil)
				srv.Close()
				if err := h.Close(srv); !errors.Is(err, net.ErrClosed) {
					t.Errorf("Close of a closed connection = %v, want net.ErrClosed", err)
				}
			})
			t.Run("not TCP", func(t *testing.T) {
				a, b := net.Pipe()
				defer b.Close()
				if err := h.Close(pipeConn{a}); err != nil {
					t.Fatal(err)
				}
				if _, err := a.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
					t.Errorf("write after Close = %v, want the pipe closed", err)
				}
				r := h.next(t, time.Second)
				if r.Outcome != Plain || !errors.Is(r.Err, ErrNotTCP) {
					t.Errorf("report %v %v, want %v %v", r.Outcome, r.Err, Plain, ErrNotTCP)
				}
			})
			t.Run("concurrent close", func(t *testing.T) {
				srv, cli := pair(t, ln, nil)
				errs := make(chan error, 2)
				for range 2 {
					go func() { errs <- h.Close(srv) }()
				}
				e1, e2 := <-errs, <-errs
				if (e1 == nil) == (e2 == nil) {
					t.Fatalf("concurrent Closes returned %v and %v, want one nil and one net.ErrClosed", e1, e2)
				}
				cli.Close()
				h.next(t, 5*time.Second)
				select {
				case r := <-h.reports:
					t.Errorf("second report %+v: the socket was taken twice", r)
				case <-time.After(50 * time.Millisecond):
				}
			})
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative idle", Config{IdleTimeout: -1}, "IdleTimeout"},
		{"negative hold", Config{MaxHold: -time.Second}, "MaxHold"},
		{"negative budget", Config{MaxDiscard: -1}, "MaxDiscard"},
		{"negative cap", Config{MaxConns: -1}, "MaxConns"},
		{"IPv6 prefix too long", Config{IPv6PrefixLen: 129}, "IPv6PrefixLen"},
		{"negative user timeout", Config{TCPUserTimeout: -time.Second}, "TCPUserTimeout"},
		{"user timeout beyond an int of milliseconds", Config{TCPUserTimeout: 30 * 24 * time.Hour}, "TCPUserTimeout"},
		{"idle beyond hold", Config{IdleTimeout: time.Minute, MaxHold: time.Second}, "exceeds MaxHold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if c != nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, %v; want an ErrConfig naming %s", c, err, tc.want)
			}
		})
	}
	c, err := New(Config{})
	if err != nil {
		t.Fatalf("New(Config{}) = %v", err)
	}
	if c, err := New(Config{MaxHold: time.Second}); err != nil || c.cfg.IdleTimeout != time.Second {
		t.Errorf("New with only MaxHold 1s = %v; want IdleTimeout 1s, not an error", err)
	}
	if c.cfg.IdleTimeout != DefaultIdleTimeout || c.cfg.MaxHold != DefaultMaxHold ||
		c.cfg.MaxDiscard != DefaultMaxDiscard || c.cfg.MaxConns != DefaultMaxConns ||
		c.cfg.MaxConnsPerIP != DefaultMaxConnsPerIP || c.cfg.IPv6PrefixLen != DefaultIPv6PrefixLen ||
		c.cfg.MaxQueued != DefaultMaxQueued {
		t.Errorf("zero Config gave %+v, want the defaults", c.cfg)
	}
	if c, err := New(Config{MaxConnsPerIP: -1}); err != nil || c.peers != nil {
		t.Errorf("New with MaxConnsPerIP -1 = %v; want no per-peer cap", err)
	}
}

// TestShutdown: Shutdown waits for lingering connections, closes the rest
// when its context ends and says so, and later hand-offs close plainly.
func TestShutdown(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			fds := proc.OpenFDs()
			h := newHarness(t, Config{}, be.portable)
			ln := listen(t)
			var clients []*net.TCPConn
			for range 5 {
				srv, cli := pair(t, ln, nil)
				h.Close(srv)
				clients = append(clients, cli)
			}
			clients[0].Close() // one peer finishes before Shutdown ends
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := h.Shutdown(ctx)
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "closed 4 ") {
				t.Errorf("Shutdown = %v, want DeadlineExceeded after closing 4", err)
			}
			if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
				t.Errorf("Shutdown took %v, want about its 300ms context", d)
			}
			got := map[Outcome]int{}
			for range 5 {
				got[h.next(t, time.Second).Outcome]++
			}
			if got[PeerClosed] != 1 || got[Shutdown] != 4 {
				t.Errorf("outcomes %v, want 1 peer_closed and 4 shutdown", got)
			}
			for _, c := range clients[1:] {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := io.ReadAll(c); err != nil {
					t.Errorf("peer of a connection closed by Shutdown: %v, want a clean EOF", err)
				}
			}
			srv, last := pair(t, ln, nil)
			if err := h.Close(srv); err != nil {
				t.Fatal(err)
			}
			if r := h.next(t, time.Second); r.Outcome != Plain || !errors.Is(r.Err, ErrShutdown) {
				t.Errorf("hand-off after Shutdown: %v %v, want plain close with ErrShutdown", r.Outcome, r.Err)
			}
			if st := h.Stats(); st.Lingering != 0 {
				t.Errorf("Stats().Lingering = %d after Shutdown", st.Lingering)
			}
			if err := h.Shutdown(context.Background()); err != nil {
				t.Errorf("second Shutdown = %v", err)
			}
			for _, c := range clients {
				c.Close()
			}
			last.Close()
			ln.Close()
			if now := proc.OpenFDs(); now > fds {
				t.Errorf("%d descriptors open after Shutdown, %d before", now, fds)
			}
		})
	}
}

// TestCloseTLSConn: a *tls.Conn is unwrapped to its TCP connection, whose
// last bytes (here a TLS record) reach the peer before a clean end.
func TestCloseTLSConn(t *testing.T) {
	ca := testbed.SharedPKI(t)
	h := newHarness(t, Config{}, selectedPortable())
	srvRaw, cliRaw := pair(t, listen(t), nil)
	srv := tls.Server(srvRaw, ca.ServerConfig(tls.VersionTLS13))
	cli := tls.Client(cliRaw, ca.ClientConfig(&ca.Client, tls.VersionTLS13))
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	cli.Write(make([]byte, 1000)) // unread by the server
	srv.Write([]byte("goodbye"))
	if err := h.Close(srv); err != nil {
		t.Fatal(err)
	}
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(cli)
	if string(got) != "goodbye" || err != nil {
		t.Errorf("client read %q, %v; want goodbye and a clean end", got, err)
	}
	cli.Close()
	if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed {
		t.Errorf("outcome %v, want %v", r.Outcome, PeerClosed)
	}
}
