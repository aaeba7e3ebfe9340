//go:build linux

package linger

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/netns"
	"github.com/linger-go/linger/internal/testbed"
)

// TestIdleIsOneTimeout: a peer that never sends nor closes is released
// after one IdleTimeout, not two: the acknowledgement of our own FIN, which
// arrives after the hand-off, is not progress.
func TestIdleIsOneTimeout(t *testing.T) {
	const idle, trials = 400 * time.Millisecond, 20
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{IdleTimeout: idle}, be.portable)
			ln := listen(t)
			for range trials {
				srv, _ := pair(t, ln, nil)
				h.Close(srv)
			}
			late := 0
			var longest time.Duration
			for range trials {
				r := h.next(t, 10*time.Second)
				if r.Outcome != Idle {
					t.Errorf("outcome %v (%v), want %v", r.Outcome, r.Err, Idle)
				}
				longest = max(longest, r.Held)
				// Two timeouts would be 800 ms; 300 ms of slack is for a
				// loaded machine's scheduling.
				if r.Held >= idle*7/4 {
					late++
				}
			}
			t.Logf("%d trials: longest hold %v with IdleTimeout %v", trials, longest, idle)
			if late > 0 {
				t.Errorf("%d of %d silent peers held for 1.75 idle timeouts or more (longest %v)", late, trials, longest)
			}
		})
	}
}

// TestNotIdleWhileUnacknowledged: over a path that loses 5 % of packets,
// the server's last word (32 KiB) and FIN are retransmitted with back-off,
// which can leave the peer acknowledging nothing for longer than a short
// IdleTimeout. Such a connection is not idle: the event loop keeps it while
// bytes of ours are unacknowledged, so no connection ends as idle with
// Unacked above zero, and every client reads the whole last word.
func TestNotIdleWhileUnacknowledged(t *testing.T) {
	testbed.RequireRoot(t, "the lossy path between two network namespaces")
	const trials, word = 40, 32 << 10
	p, err := netns.NewPair(netns.PathConfig{Loss: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ln, err := p.Server.Listen("tcp", netip.AddrPortFrom(p.ServerIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The minimum retransmission timeout is 200 ms, so one lost segment
	// leaves 200 ms or more without an acknowledgement.
	h := newHarness(t, Config{IdleTimeout: 150 * time.Millisecond, MaxHold: 20 * time.Second}, false)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				conn.Write(make([]byte, word))
				h.Close(conn)
			}()
		}
	}()
	var wg sync.WaitGroup
	short := make(chan string, trials)
	for range trials {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			conn, err := p.Client.DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				short <- err.Error()
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(15 * time.Second))
			conn.Write(make([]byte, 1000)) // unread by the server
			n, err := io.Copy(io.Discard, conn)
			if err != nil || n != word {
				short <- (&net.OpError{Op: "read", Err: err}).Error()
			}
		}()
	}
	wg.Wait()
	close(short)
	for s := range short {
		t.Errorf("client: %s", s)
	}
	outcomes := map[Outcome]int{}
	for range trials {
		r := h.next(t, 25*time.Second)
		outcomes[r.Outcome]++
		if r.Outcome == Idle && r.Unacked > 0 {
			t.Errorf("released as idle after %v with %d bytes of ours unacknowledged", r.Held, r.Unacked)
		}
	}
	st, _ := p.Server.Counters()
	t.Logf("%d trials over a path with 5%% loss: outcomes %v; server retransmitted %d segments in all", trials, outcomes, st.RetransSegs)
}
