//go:build linux

package linger

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/netns"
	"github.com/linger-go/linger/internal/testbed"
)

// TestSlash64AtItsCap is TestOneAddressAtItsCap with IPv6 peers, in a
// network namespace whose loopback carries documentation addresses: the
// attacker spreads its connections over 64 addresses of one /64, which
// MaxConnsPerIP counts as one peer, so each new one forces a release under
// that /64's cap; the victims come from another /64 of the same /56 and
// should read the alert as often as without the attacker.
func TestSlash64AtItsCap(t *testing.T) {
	testbed.RequireRoot(t, "the /64 attack in a network namespace")
	const perIP, attackers = 32, 64
	pair, err := netns.NewPair(netns.PathConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pair.Close()
	ns := pair.Server
	server := netip.MustParseAddr("2001:db8:0:1::1")
	victim := netip.MustParseAddr("2001:db8:0:101::1")
	attack := netip.MustParsePrefix("2001:db8:0:100::/64")
	var batch strings.Builder
	for _, a := range []netip.Addr{server, victim} {
		fmt.Fprintf(&batch, "addr add %s/128 dev lo nodad\n", a)
	}
	a := attack.Addr()
	var from []netip.Addr
	for range attackers {
		a = a.Next()
		from = append(from, a)
		fmt.Fprintf(&batch, "addr add %s/128 dev lo nodad\n", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, "ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}

	trials := hostileTrials()
	ca := testbed.SharedPKI(t)
	// Sockets belong to the namespace they were made in: dial from it.
	inNS := func(local netip.Addr, addr string) (c net.Conn, err error) {
		err = ns.Do(func() error {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0)), Timeout: time.Second, FallbackDelay: -1}
			c, err = d.Dial("tcp", addr)
			return err
		})
		return c, err
	}
	count := func(t *testing.T, withAttack bool) (alerts int, others map[string]int, st Stats) {
		h := newHarness(t, Config{MaxConnsPerIP: perIP}, selectedPortable())
		ln, err := ns.Listen("tcp", netip.AddrPortFrom(server, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		addr := serveTLS(t, h.Listener(ln), ca.ServerConfig(tls.VersionTLS13))
		if withAttack {
			var next atomic.Uint32
			stop := attackAtCap(t, func() (net.Conn, error) {
				return inNS(from[int(next.Add(1))%len(from)], addr)
			}, perIP)
			defer stop()
		}
		alerts, others = countAlerts(trials, 20*time.Millisecond, func() error {
			raw, err := inNS(victim, addr)
			if err != nil {
				return err
			}
			return goUploadOver(ca, raw)
		})
		return alerts, others, h.Stats()
	}
	base, baseOthers, _ := count(t, false)
	got, gotOthers, st := count(t, true)
	t.Logf("victims from %v reading the alert: %d/%d without the attacker (otherwise %v), %d/%d with it from %d addresses of %v (otherwise %v); the attacker's connections released under its /64's cap: %d",
		victim, base, trials, baseOthers, got, trials, attackers, attack, gotOthers, st.Outcomes[Released])
	if st.Outcomes[Released] < uint64(trials)/2 {
		t.Errorf("premise: only %d releases under the /64's cap", st.Outcomes[Released])
	}
	if margin := max(2, trials/15); got < base-margin {
		t.Errorf("victims read the alert in %d/%d trials with the /64 attacking, %d/%d without: its own cap costs them their alerts", got, trials, base, trials)
	}
}
