package watch

import (
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// TestFilter runs the kernel filter in x/net/bpf's VM (without the
// loopback prologue, whose extensions the VM lacks) over segments the
// verdict needs and segments it must never see.
func TestFilter(t *testing.T) {
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
