package watch

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/net/bpf"
)

// TestFilter runs the kernel filter in x/net/bpf's VM (without the
// loopback prologue, whose extensions the VM lacks) over segments the
// verdict needs and segments it must never see.
func TestFilter(t *testing.T) {
	hundred := make([]uint16, 100)
	for i := range hundred {
		hundred[i] = uint16(1000 + i)
	}
	v4s, v4c := netip.MustParseAddrPort("127.0.0.1:443"), netip.MustParseAddrPort("127.0.0.1:50000")
	v6s, v6c := netip.MustParseAddrPort("[::1]:443"), netip.MustParseAddrPort("[::1]:50000")
	other := netip.MustParseAddrPort("127.0.0.1:8080")
	tests := []struct {
		name  string
		ports []uint16
		pkt   []byte
		pass  bool
	}{
		{"SYN-ACK", nil, packet(v4s, v4c, 1, flagSYN|flagACK, nil), true},
		{"SYN alone", nil, packet(v4c, v4s, 1, flagSYN, nil), false},
		{"FIN", nil, packet(v4s, v4c, 1, flagFIN|flagACK, nil), true},
		{"RST", nil, packet(v4s, v4c, 1, flagRST|flagACK, nil), true},
		{"pure ACK", nil, packet(v4c, v4s, 1, flagACK, nil), false},
		{"upload data", nil, packet(v4c, v4s, 1, flagACK, make([]byte, 1000)), false},
		{"TLS 1.2 alert", nil, packet(v4s, v4c, 1, flagACK, record(recordAlert, 2)), true},
		{"TLS 1.3 alert-sized record", nil, packet(v4s, v4c, 1, flagACK, record(recordApplicationData, 19)), true},
		{"TLS 1.3 response record", nil, packet(v4s, v4c, 1, flagACK, record(recordApplicationData, 300)), false},
		{"handshake record", nil, packet(v4s, v4c, 1, flagACK, record(22, 100)), false},
		{"IPv6 RST", nil, packet(v6s, v6c, 1, flagRST, nil), true},
		{"IPv6 alert", nil, packet(v6s, v6c, 1, flagACK, record(recordApplicationData, 19)), true},
		{"IPv6 data", nil, packet(v6s, v6c, 1, flagACK, record(recordApplicationData, 30)), false},
		{"port: from it", []uint16{8443, 443}, packet(v4s, v4c, 1, flagFIN, nil), true},
		{"port: to it", []uint16{443}, packet(v4c, v4s, 1, flagFIN, nil), true},
		{"port: neither", []uint16{443}, packet(other, v4c, 1, flagFIN, nil), false},
		{"port: IPv6", []uint16{443}, packet(v6c, v6s, 1, flagRST, nil), true},
		{"UDP", nil, func() []byte { p := packet(v4s, v4c, 1, flagRST, nil); p[9] = 17; return p }(), false},
		{"later fragment", nil, func() []byte { p := packet(v4s, v4c, 1, flagRST, nil); p[7] = 1; return p }(), false},
		{"port: the last of 100", hundred, packet(v4c, netip.AddrPortFrom(v4s.Addr(), 1099), 1, flagFIN, nil), true},
		{"port: none of 100", hundred, packet(v4c, netip.AddrPortFrom(v4s.Addr(), 1100), 1, flagFIN, nil), false},
	}
	// Every case in every shape of header the filter reads by a path of
	// its own: IPv4 with options, TCP headers of 20 and 32 bytes (fixed
	// offsets) and of 24 (the indirect path).
	base := slices.Clone(tests)
	for _, sh := range []struct {
		name            string
		tcpOpts, ipOpts int
	}{{"/TCP options", 3, 0}, {"/TCP 24 bytes", 1, 0}, {"/IP options", 0, 1}, {"/IP and TCP options", 3, 2}} {
		for _, tt := range base {
			if tt.pkt[0]>>4 == 6 && sh.ipOpts > 0 {
				continue
			}
			tt.name, tt.pkt = tt.name+sh.name, reshape(tt.pkt, sh.tcpOpts, sh.ipOpts)
			tests = append(tests, tt)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := Filter(FilterConfig{Ports: tt.ports})
			if err != nil {
				t.Fatal(err)
			}
			ins := make([]bpf.Instruction, len(raw))
			for i, r := range raw {
				ins[i] = r.Disassemble()
			}
			vm, err := bpf.NewVM(ins)
			if err != nil {
				t.Fatal(err)
			}
			n, err := vm.Run(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if pass := n > 0; pass != tt.pass {
				t.Errorf("filter returned %d for %s; want pass=%v", n, tt.name, tt.pass)
			}
			if n > 0 && n != Snap {
				t.Errorf("filter passes %d bytes; want Snap (%d)", n, Snap)
			}
		})
	}
}

// TestFilterLoopback: the loopback prologue assembles (the VM cannot run
// it), and too many ports are an error, not a broken program.
func TestFilterLoopback(t *testing.T) {
	if _, err := Filter(FilterConfig{Ports: []uint16{443}, LoopbackIndex: 1}); err != nil {
		t.Fatal(err)
	}
	many := make([]uint16, 101)
	if _, err := Filter(FilterConfig{Ports: many}); err == nil {
		t.Error("101 ports: no error")
	}
}

// reshape returns a copy of pkt, as packet builds it (20-byte IPv4 and
// TCP headers), with tcpWords words of TCP options and, for IPv4, ipWords
// of IP options (NOPs), lengths adjusted.
func reshape(pkt []byte, tcpWords, ipWords int) []byte {
	ipLen := 40
	if pkt[0]>>4 == 4 {
		ipLen = 20
	} else {
		ipWords = 0
	}
	nop := func(words int) []byte { return bytes.Repeat([]byte{1}, 4*words) }
	tcp := slices.Concat(pkt[ipLen:ipLen+20], nop(tcpWords), pkt[ipLen+20:])
	tcp[12] = byte(5+tcpWords) << 4
	ip := slices.Concat(pkt[:ipLen], nop(ipWords))
	if ipLen == 20 {
		ip[0] = 0x40 | byte(5+ipWords)
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(tcp)))
	} else {
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
	}
	return append(ip, tcp...)
}
