package linger

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// TestConfigEdges: every Config field at zero, negative and huge: the value
// the engine then runs with, or an ErrConfig that names the field. Huge
// values are held where the engine's int64 clocks and counters cannot
// overflow; negative ones turn a sharing cap off or are refused.
func TestConfigEdges(t *testing.T) {
	const years150 = 150 * 365 * 24 * time.Hour
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string            // the field an ErrConfig names; "" for none
		check   func(Config) bool // on the Config the Closer runs with
	}{
		{"IdleTimeout zero", Config{}, "", func(c Config) bool { return c.IdleTimeout == DefaultIdleTimeout }},
		{"IdleTimeout negative", Config{IdleTimeout: -1}, "IdleTimeout", nil},
		{"IdleTimeout 150 years", Config{IdleTimeout: years150, MaxHold: math.MaxInt64}, "", func(c Config) bool { return c.IdleTimeout == maxBound && c.MaxHold == maxBound }},
		{"IdleTimeout huge, MaxHold default", Config{IdleTimeout: math.MaxInt64}, "exceeds MaxHold", nil},

		{"MaxHold zero", Config{}, "", func(c Config) bool { return c.MaxHold == DefaultMaxHold }},
		{"MaxHold negative", Config{MaxHold: -time.Second}, "MaxHold", nil},
		{"MaxHold huge", Config{MaxHold: math.MaxInt64}, "", func(c Config) bool {
			return c.MaxHold == maxBound && c.IdleTimeout == DefaultIdleTimeout
		}},
		{"MaxHold tiny", Config{MaxHold: 1}, "", func(c Config) bool { return c.MaxHold == 1 && c.IdleTimeout == 1 }},

		{"MaxDiscard zero", Config{}, "", func(c Config) bool { return c.MaxDiscard == DefaultMaxDiscard }},
		{"MaxDiscard negative", Config{MaxDiscard: -1}, "MaxDiscard", nil},
		{"MaxDiscard huge", Config{MaxDiscard: math.MaxInt64}, "", func(c Config) bool {
			return c.MaxDiscard == maxBytes && c.PressureDiscard == DefaultPressureDiscard
		}},

		{"PressureDiscard zero", Config{}, "", func(c Config) bool { return c.PressureDiscard == DefaultPressureDiscard }},
		{"PressureDiscard negative: off", Config{PressureDiscard: -1}, "", func(c Config) bool { return c.PressureDiscard == c.MaxDiscard }},
		{"PressureDiscard huge: off", Config{PressureDiscard: math.MaxInt64}, "", func(c Config) bool { return c.PressureDiscard == c.MaxDiscard }},
		{"PressureDiscard and MaxDiscard huge: off", Config{MaxDiscard: math.MaxInt64, PressureDiscard: math.MaxInt64}, "", func(c Config) bool {
			return c.PressureDiscard == maxBytes && c.MaxDiscard == maxBytes
		}},

		{"MaxConns zero", Config{}, "", func(c Config) bool { return c.MaxConns == DefaultMaxConns }},
		{"MaxConns negative", Config{MaxConns: -1}, "MaxConns", nil},
		{"MaxConns huge", Config{MaxConns: math.MaxInt}, "", func(c Config) bool { return c.MaxConns == math.MaxInt }},

		{"MaxConnsPerIP zero", Config{}, "", func(c Config) bool { return c.MaxConnsPerIP == DefaultMaxConnsPerIP }},
		{"MaxConnsPerIP negative: off", Config{MaxConnsPerIP: -1}, "", func(c Config) bool { return c.MaxConnsPerIP == 0 }},
		{"MaxConnsPerIP huge", Config{MaxConnsPerIP: math.MaxInt}, "", func(c Config) bool { return c.MaxConnsPerIP == math.MaxInt }},

		{"IPv6PrefixLen zero", Config{}, "", func(c Config) bool { return c.IPv6PrefixLen == DefaultIPv6PrefixLen }},
		{"IPv6PrefixLen negative", Config{IPv6PrefixLen: -1}, "IPv6PrefixLen", nil},
		{"IPv6PrefixLen too long", Config{IPv6PrefixLen: 129}, "IPv6PrefixLen", nil},

		{"MaxQueued zero", Config{}, "", func(c Config) bool { return c.MaxQueued == DefaultMaxQueued }},
		{"MaxQueued negative: off", Config{MaxQueued: -1}, "", func(c Config) bool { return c.MaxQueued == math.MaxInt64 }},
		{"MaxQueued huge", Config{MaxQueued: math.MaxInt64}, "", func(c Config) bool { return c.MaxQueued == math.MaxInt64 }},

		{"TCPUserTimeout zero", Config{}, "", func(c Config) bool { return c.TCPUserTimeout == 0 }},
		{"TCPUserTimeout negative", Config{TCPUserTimeout: -time.Second}, "TCPUserTimeout", nil},
		{"TCPUserTimeout at the kernel's int", Config{TCPUserTimeout: maxUserTimeout}, "", func(c Config) bool { return c.TCPUserTimeout == maxUserTimeout }},
		{"TCPUserTimeout 30 days", Config{TCPUserTimeout: 30 * 24 * time.Hour}, "TCPUserTimeout", nil},
		{"TCPUserTimeout 50 days", Config{TCPUserTimeout: 50 * 24 * time.Hour}, "TCPUserTimeout", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newCloser(tc.cfg, true)
			if tc.wantErr != "" {
				if c != nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New = %v; want an ErrConfig naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New = %v", err)
			}
			if !tc.check(c.cfg) {
				t.Errorf("runs with %+v", c.cfg)
			}
			// No bound may be under pressure, or past, at the start: the
			// sums of the clock and the bounds must not have wrapped.
			c.mu.Lock()
			b := c.budget()
			c.mu.Unlock()
			if b != c.cfg.MaxDiscard {
				t.Errorf("budget at the start %d, want MaxDiscard %d: under pressure with nothing lingering", b, c.cfg.MaxDiscard)
			}
		})
	}
}

// TestHugeBoundsLinger: with each bound at its type's largest value (held
// where no sum overflows), a connection lingers until its peer closes,
// having its bytes discarded, instead of ending at once by the bound whose
// sum wrapped (budget for MaxDiscard, hard_cap for MaxHold) or under a
// permanent pressure (IdleTimeout).
func TestHugeBoundsLinger(t *testing.T) {
	const sent = 256 << 10
	for _, be := range backends {
		for _, tc := range []struct {
			name string
			cfg  Config
		}{
			{"MaxDiscard", Config{MaxDiscard: math.MaxInt64}},
			{"MaxHold", Config{MaxHold: math.MaxInt64}},
			{"IdleTimeout and MaxHold", Config{IdleTimeout: math.MaxInt64, MaxHold: math.MaxInt64}},
			{"all", Config{IdleTimeout: math.MaxInt64, MaxHold: math.MaxInt64, MaxDiscard: math.MaxInt64,
				PressureDiscard: math.MaxInt64, MaxConns: math.MaxInt, MaxConnsPerIP: math.MaxInt, MaxQueued: math.MaxInt64}},
		} {
			t.Run(be.name+"/"+tc.name, func(t *testing.T) {
				h := newHarness(t, tc.cfg, be.portable)
				srv, cli := pair(t, listen(t), nil)
				h.Close(srv)
				// Past the inline drain: the event loop reads these.
				time.Sleep(50 * time.Millisecond)
				cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := cli.Write(make([]byte, sent)); err != nil {
					t.Fatalf("the peer's write: %v (the connection ended early)", err)
				}
				time.Sleep(100 * time.Millisecond)
				cli.Close()
				r := h.next(t, 5*time.Second)
				if r.Outcome != PeerClosed || r.Discarded != sent {
					t.Errorf("outcome %v (%v), discarded %d; want %v after %d", r.Outcome, r.Err, r.Discarded, PeerClosed, sent)
				}
				if r.Held < 100*time.Millisecond {
					t.Errorf("held %v, want the 150 ms the peer took", r.Held)
				}
			})
		}
	}
}
