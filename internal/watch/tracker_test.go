package watch

import (
	"net/netip"
	"testing"
)

// TestTracker feeds the tracker the segments a filter would pass for each
// way a connection ends, and checks the verdict and the port's counts.
func TestTracker(t *testing.T) {
	srv, peer := netip.MustParseAddrPort("127.0.0.1:443"), netip.MustParseAddrPort("127.0.0.1:50000")
	srv6, peer6 := netip.MustParseAddrPort("[::1]:443"), netip.MustParseAddrPort("[::1]:50000")
	const iss = 0xfffffff0 // the sequence numbers wrap during the test
	type seg struct {
		fromPeer bool
		seq      uint32 // relative to iss+1
		flags    uint8
		payload  []byte
		incoming bool // sent by another host
		// ack acknowledges the other side's bytes up to this
		// (relative, like seq; 0: none)
		ack uint32
	}
	synack := seg{seq: ^uint32(0), flags: flagSYN | flagACK}
	alert13 := record(recordApplicationData, 19)
	tests := []struct {
		name     string
		ports    []uint16
		v6       bool
		segs     []seg
		want     []Kind
		afterFIN bool
		counts   Counts
	}{
		{name: "clean close, server first", segs: []seg{synack, {seq: 500, flags: flagFIN | flagACK}, {fromPeer: true, seq: 99, flags: flagFIN | flagACK}},
			counts: Counts{Opened: 1, ServerClosed: 1}},
		{name: "clean close, peer first (keep-alive)", segs: []seg{synack, {fromPeer: true, seq: 99, flags: flagFIN | flagACK}, {seq: 500, flags: flagFIN | flagACK}},
			counts: Counts{Opened: 1}},
		{name: "TLS 1.3 alert, then abort on close", segs: []seg{synack, {seq: 3000, flags: flagACK, payload: alert13}, {seq: 3024, flags: flagRST | flagACK}},
			want: []Kind{LostAlert}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostAlert: 1}},
		{name: "TLS 1.2 alert (encrypted, 26 bytes)", segs: []seg{synack, {seq: 3000, flags: flagACK, payload: record(recordAlert, 26)}, {seq: 3031, flags: flagRST | flagACK}},
			want: []Kind{LostAlert}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostAlert: 1}},
		{name: "IPv6 alert, then abort", v6: true, segs: []seg{synack, {seq: 3000, flags: flagACK, payload: alert13}, {seq: 3024, flags: flagRST | flagACK}},
			want: []Kind{LostAlert}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostAlert: 1}},
		{name: "response, then abort", segs: []seg{synack, {seq: 500, flags: flagRST | flagACK}},
			want: []Kind{LostData}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostData: 1}},
		{name: "alert, then more data, then abort", segs: []seg{synack, {seq: 3000, flags: flagACK, payload: alert13}, {seq: 3100, flags: flagRST | flagACK}},
			want: []Kind{LostData}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostData: 1}},
		{name: "abort without data", segs: []seg{synack, {seq: 0, flags: flagRST | flagACK}},
			want: []Kind{LostNone}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostNone: 1}},
		{name: "alert, FIN, then RST answering data after it", segs: []seg{synack, {seq: 3000, flags: flagACK, payload: alert13},
			{seq: 3024, flags: flagFIN | flagACK}, {seq: 3025, flags: flagRST}},
			want: []Kind{LostAlert}, afterFIN: true, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostAlert: 1, LostAfterFIN: 1}},
		{name: "alert in the FIN segment, RST after", segs: []seg{synack, {seq: 3000, flags: flagFIN | flagACK, payload: alert13}, {seq: 3025, flags: flagRST}},
			want: []Kind{LostAlert}, afterFIN: true, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostAlert: 1, LostAfterFIN: 1}},
		{name: "retransmissions and repeated resets count once", segs: []seg{synack, synack, {seq: 3000, flags: flagACK, payload: alert13},
			{seq: 3000, flags: flagACK, payload: alert13}, {seq: 3024, flags: flagRST | flagACK}, {seq: 3024, flags: flagRST}, {seq: 3024, flags: flagRST}},
			want: []Kind{LostAlert}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostAlert: 1}},
		{name: "peer resets", segs: []seg{synack, {fromPeer: true, seq: 10, flags: flagRST}, {seq: 10, flags: flagRST}},
			want: []Kind{PeerReset}, counts: Counts{Opened: 1, PeerResets: 1}},
		{name: "peer FIN, then the server aborts", segs: []seg{synack, {fromPeer: true, seq: 99, flags: flagFIN | flagACK}, {seq: 500, flags: flagRST | flagACK}},
			want: []Kind{LostData}, counts: Counts{Opened: 1, Lost: 1, LostData: 1}},
		{name: "both FINs, then an RST (shutdown, then close with unread data)", segs: []seg{synack, {seq: 500, flags: flagFIN | flagACK},
			{fromPeer: true, seq: 99, flags: flagFIN | flagACK}, {seq: 501, flags: flagRST | flagACK}},
			want: []Kind{LostData}, afterFIN: true, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostData: 1, LostAfterFIN: 1}},
		{name: "alert coalesced behind data: data (a known miss)", segs: []seg{synack,
			{seq: 3000, flags: flagACK, payload: cat(record(recordApplicationData, 40), alert13)}, {seq: 3069, flags: flagRST | flagACK}},
			want: []Kind{LostData}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostData: 1}},
		{name: "a 2-byte TLS 1.3 write last: alert (a known false alert)", segs: []seg{synack, {seq: 3000, flags: flagACK, payload: alert13}, {seq: 3024, flags: flagRST | flagACK}},
			want: []Kind{LostAlert}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostAlert: 1}},
		{name: "Connection: close, then the peer's close_notify draws an RST: closing, not lost", segs: []seg{synack,
			{seq: 500, flags: flagFIN | flagACK, payload: alert13}, {fromPeer: true, seq: 99, ack: 525, flags: flagACK, payload: alert13},
			{seq: 525, flags: flagRST}},
			want: []Kind{ClosingReset}, afterFIN: true, counts: Counts{Opened: 1, ServerClosed: 1, ClosingResets: 1}},
		{name: "the peer's close_notify before the server's FIN reached it: closing", segs: []seg{synack,
			{fromPeer: true, seq: 99, ack: 470, flags: flagACK, payload: alert13}, {seq: 500, flags: flagFIN | flagACK, payload: alert13},
			{seq: 525, flags: flagRST}},
			want: []Kind{ClosingReset}, afterFIN: true, counts: Counts{Opened: 1, ServerClosed: 1, ClosingResets: 1}},
		{name: "the peer closes first, the server aborts on its unread close_notify: closing", segs: []seg{synack,
			{fromPeer: true, seq: 99, ack: 500, flags: flagACK | flagFIN, payload: alert13}, {seq: 500, ack: 99 + 24 + 1, flags: flagRST | flagACK}},
			want: []Kind{ClosingReset}, counts: Counts{Opened: 1, ClosingResets: 1}},
		{name: "the peer sent more after an alert-shaped record: lost", segs: []seg{synack,
			{fromPeer: true, seq: 99, ack: 500, flags: flagACK, payload: alert13}, {seq: 500, ack: 99 + 24 + 4000, flags: flagRST | flagACK}},
			want: []Kind{LostData}, counts: Counts{Opened: 1, ServerClosed: 1, Lost: 1, LostData: 1}},
		{name: "a SYN-ACK from another host: not ours", segs: []seg{{seq: ^uint32(0), flags: flagSYN | flagACK, incoming: true}, {seq: 0, flags: flagRST, incoming: true}}},
		{name: "untracked reset on a watched port", ports: []uint16{443}, segs: []seg{{seq: 0, flags: flagRST}},
			counts: Counts{Untracked: 1}},
		{name: "a reset on a port never seen serving: not counted", segs: []seg{{seq: 0, flags: flagRST}}},
		{name: "port reuse after a clean end", segs: []seg{synack, {seq: 5, flags: flagFIN}, {fromPeer: true, flags: flagFIN},
			{seq: 1000, flags: flagSYN | flagACK}, {seq: 1001, flags: flagRST}},
			want: []Kind{LostNone}, counts: Counts{Opened: 2, ServerClosed: 2, Lost: 1, LostNone: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Verdict
			tr := NewTracker(tt.ports, 0, func(v Verdict) { got = append(got, v) })
			s, p := srv, peer
			if tt.v6 {
				s, p = srv6, peer6
			}
			for _, sg := range tt.segs {
				from, to := s, p
				if sg.fromPeer {
					from, to = p, s
				}
				ack := uint32(0)
				if sg.ack != 0 {
					ack = iss + 1 + sg.ack
				}
				seg, err := ParseSegment(packetAck(from, to, iss+1+sg.seq, ack, sg.flags, sg.payload))
				if err != nil {
					t.Fatal(err)
				}
				seg.Outgoing = !sg.incoming
				tr.Add(seg)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("verdicts %+v; want kinds %v", got, tt.want)
			}
			for i, v := range got {
				if v.Kind != tt.want[i] || v.AfterFIN != tt.afterFIN || v.Server != s || v.Peer != p {
					t.Errorf("verdict %+v; want %s, after FIN %v, server %v, peer %v", v, tt.want[i], tt.afterFIN, s, p)
				}
			}
			if c := tr.Counts()[443]; c != tt.counts {
				t.Errorf("counts %+v\nwant   %+v", c, tt.counts)
			}
		})
	}
}

// TestTrackerEvicts: a full flow table pushes out its least recently used
// flow and counts it when it was still open; a flow that ended goes
// uncounted.
func TestTrackerEvicts(t *testing.T) {
	tr := NewTracker(nil, 2, nil)
	srv := netip.MustParseAddrPort("127.0.0.1:443")
	add := func(peerPort uint16, flags uint8) {
		s, _ := ParseSegment(packet(srv, netip.AddrPortFrom(srv.Addr(), peerPort), 1, flags, nil))
		s.Outgoing = true
		tr.Add(s)
	}
	add(1, flagSYN|flagACK)
	add(2, flagSYN|flagACK)
	add(1, flagRST) // 1 ends, and is used most recently
	add(3, flagSYN|flagACK)
	if held, evicted := tr.Flows(); held != 2 || evicted != 1 {
		t.Fatalf("held %d, evicted %d; want 2 and 1 (flow 2, open)", held, evicted)
	}
	add(4, flagSYN|flagACK) // pushes out 1, which ended
	if _, evicted := tr.Flows(); evicted != 1 {
		t.Errorf("evicted %d after pushing out an ended flow; want still 1", evicted)
	}
	add(2, flagRST) // flow 2 is gone: an untracked reset
	if c := tr.Counts()[443]; c.Untracked != 1 || c.Lost != 1 {
		t.Errorf("counts %+v; want 1 lost (flow 1) and 1 untracked (flow 2)", c)
	}
}

// TestParseSegment rejects what is not a whole TCP header, and takes the
// payload's length from the IP header, not from link-layer padding.
func TestParseSegment(t *testing.T) {
	a, b := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2")
	p := append(packet(a, b, 7, flagACK, nil), 0, 0, 0, 0, 0, 0) // Ethernet padding
	s, err := ParseSegment(p)
	if err != nil || s.PayloadLen != 0 || len(s.Payload) != 0 || s.Src != a || s.Dst != b || s.Seq != 7 {
		t.Errorf("padded ACK: %+v, %v", s, err)
	}
	for _, bad := range [][]byte{nil, p[:30], make([]byte, 60)} {
		if _, err := ParseSegment(bad); err == nil {
			t.Errorf("ParseSegment(%x): no error", bad)
		}
	}
}

// BenchmarkTracker is the user-space cost of one connection's verdict:
// parsing and tracking the five segments a "Connection: close" exchange
// over TLS passes through the filter (SYN-ACK, the server's close_notify
// and FIN, the peer's close_notify and FIN), over a full table of 64k
// flows.
func BenchmarkTracker(b *testing.B) {
	tr := NewTracker(nil, 0, nil)
	srv := netip.MustParseAddrPort("127.0.0.1:443")
	alert := record(recordApplicationData, 19)
	var pkts [][5][]byte
	for i := range 1 << 17 {
		peer := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 16), byte(i >> 8)}), uint16(i))
		pkts = append(pkts, [5][]byte{
			packet(srv, peer, 0, flagSYN|flagACK, nil),
			packetAck(srv, peer, 501, 0, flagFIN|flagACK, alert),
			packetAck(peer, srv, 100, 526, flagACK, alert),
			packetAck(peer, srv, 124, 526, flagFIN|flagACK, nil),
			packetAck(srv, peer, 526, 0, flagRST, nil),
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j, p := range pkts[i%len(pkts)] {
			s, _ := ParseSegment(p)
			s.Outgoing = j != 2 && j != 3
			tr.Add(s)
		}
	}
}
