package linger

import (
	"net"
	"testing"
	"time"
)

// TestPressureBudget: while lingering is under pressure (three quarters of
// MaxConns lingering, or either that or a connection released to make room
// within the last IdleTimeout), a peer that keeps sending is released once
// it has cost PressureDiscard, not MaxDiscard; without pressure, MaxDiscard
// holds. A release under MaxConnsPerIP puts only its own peer under
// pressure: another address keeps MaxDiscard.
func TestPressureBudget(t *testing.T) {
	const (
		maxDiscard = 4 << 20
		pressure   = 64 << 10
		slack      = 64 << 10 // one write of the sender, and one batch of reads
	)
	for _, be := range backends {
		for _, tc := range []struct {
			name     string
			cfg      Config
			silent   []net.IP // peers handed off first, one silent connection each
			from     net.IP   // the sender's address; nil: 127.0.0.1
			underway bool     // the sender is handed off before the silent ones
			leave    int      // silent peers that close before the sender is handed off
			want     int64    // the budget that should stop the sender
		}{
			{"none", Config{MaxConns: 8}, []net.IP{net.IPv4(127, 0, 0, 2)}, nil, false, 0, maxDiscard},
			{"near the cap", Config{MaxConns: 4}, []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3), net.IPv4(127, 0, 0, 4)}, nil, false, 0, pressure},
			// 127.0.0.2's second connection releases its first under its
			// own cap: that puts 127.0.0.2 under pressure, not others.
			{"another peer's own cap", Config{MaxConns: 8, MaxConnsPerIP: 1}, []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 2)}, nil, false, 0, maxDiscard},
			{"its own cap", Config{MaxConns: 8, MaxConnsPerIP: 1}, []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 2)}, net.IPv4(127, 0, 0, 2), false, 0, pressure},
			{"current lingerer", Config{MaxConns: 4}, []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3), net.IPv4(127, 0, 0, 4)}, nil, true, 0, pressure},
			// The fourth hand-off sees three lingering: the mark. Then
			// three leave, and one lingers, but the mark was seen within
			// IdleTimeout.
			{"near the cap recently", Config{MaxConns: 4}, []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3), net.IPv4(127, 0, 0, 4), net.IPv4(127, 0, 0, 5)}, nil, false, 3, pressure},
		} {
			t.Run(be.name+"/"+tc.name, func(t *testing.T) {
				cfg := tc.cfg
				cfg.MaxDiscard, cfg.PressureDiscard, cfg.IdleTimeout = maxDiscard, pressure, 5*time.Second
				h := newHarness(t, cfg, be.portable)
				ln := listen(t)
				from := tc.from
				if from == nil {
					from = net.IPv4(127, 0, 0, 1)
				}
				srv, cli := pair(t, ln, from)
				handSender := func() {
					// 16 KiB every 2 ms: about 8 MB/s, so the budget, not
					// the sender, decides.
					stop := send(cli, 0, 2*time.Millisecond)
					t.Cleanup(stop)
					h.Close(srv)
				}
				if tc.underway {
					handSender()
					time.Sleep(20 * time.Millisecond)
				}
				var silent []*net.TCPConn
				for _, ip := range tc.silent {
					s, c := pair(t, ln, ip)
					h.Close(s)
					silent = append(silent, c)
				}
				for _, c := range silent[:tc.leave] {
					c.Close()
					if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed {
						t.Fatalf("a silent peer closed: outcome %v (%v), want %v", r.Outcome, r.Err, PeerClosed)
					}
				}
				if !tc.underway {
					handSender()
				}
				for {
					r := h.next(t, 10*time.Second)
					if r.Outcome == Released {
						continue // the evictions of the per-peer cases
					}
					if r.Outcome != Budget {
						t.Fatalf("outcome %v (%v), want %v", r.Outcome, r.Err, Budget)
					}
					switch {
					case tc.underway:
						// It had discarded past the pressure budget
						// already: it ends when the pressure begins, far
						// below MaxDiscard.
						if r.Discarded <= tc.want || r.Discarded > maxDiscard/4 {
							t.Errorf("discarded %d, want over %d and far below %d", r.Discarded, tc.want, maxDiscard)
						}
					case r.Discarded <= tc.want || r.Discarded > tc.want+slack:
						t.Errorf("discarded %d, want just over %d", r.Discarded, tc.want)
					}
					break
				}
			})
		}
	}
}

// TestPressureDefaults: what PressureDiscard becomes, and the receive
// buffer clamped to under pressure, for each way of setting it. Pressure
// never raises the budget, and with it off nothing is clamped.
func TestPressureDefaults(t *testing.T) {
	for _, tc := range []struct {
		name          string
		cfg           Config
		budget, clamp int64 // under pressure
	}{
		{"zero", Config{}, DefaultPressureDiscard, pressureRcvBuf},
		{"zero, small MaxDiscard", Config{MaxDiscard: 16 << 10}, 16 << 10, 0},
		{"smaller than the clamp", Config{PressureDiscard: 4 << 10}, 4 << 10, 4 << 10},
		{"off", Config{PressureDiscard: -1}, DefaultMaxDiscard, 0},
		{"above MaxDiscard", Config{MaxDiscard: 1 << 20, PressureDiscard: 2 << 20}, 1 << 20, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newCloser(tc.cfg, true)
			if err != nil {
				t.Fatal(err)
			}
			if c.cfg.PressureDiscard != tc.budget {
				t.Errorf("PressureDiscard %d, want %d", c.cfg.PressureDiscard, tc.budget)
			}
			if got := c.clampFor(c.cfg.PressureDiscard); int64(got) != tc.clamp {
				t.Errorf("clamp under pressure %d, want %d", got, tc.clamp)
			}
			if got := c.clampFor(c.cfg.MaxDiscard); got != 0 {
				t.Errorf("clamp without pressure %d, want none", got)
			}
		})
	}
}
