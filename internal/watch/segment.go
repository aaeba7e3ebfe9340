package watch

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// A Segment is one TCP segment as the filter passed it, from its IP header
// on.
type Segment struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    uint8
	// Payload is the part of the payload the snap kept; PayloadLen is the
	// payload's whole length, from the IP header's length field (so that
	// link-layer padding after a short packet is not taken for data).
	Payload    []byte
	PayloadLen int
	// Outgoing reports that this host sent the segment.
	Outgoing bool
}

// ErrNotTCP is returned by ParseSegment for a packet that is not a whole
// IPv4 or IPv6 TCP header.
var ErrNotTCP = errors.New("watch: not a TCP segment")

// ParseSegment reads p, a packet from its IP header on. Payload aliases p.
func ParseSegment(p []byte) (Segment, error) {
	var s Segment
	var tcp []byte
	total := 0 // the IP packet's length
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		ihl := int(p[0]&0xf) * 4
		if ihl < 20 || len(p) < ihl || p[9] != 6 || binary.BigEndian.Uint16(p[6:])&0x1fff != 0 {
			return s, ErrNotTCP
		}
		src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		tcp, total = p[ihl:], int(binary.BigEndian.Uint16(p[2:]))-ihl
		s.Src, s.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	case len(p) >= 40 && p[0]>>4 == 6:
		if p[6] != 6 {
			return s, ErrNotTCP
		}
		src, dst := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		tcp, total = p[40:], int(binary.BigEndian.Uint16(p[4:]))
		s.Src, s.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	default:
		return s, ErrNotTCP
	}
	if len(tcp) < 20 {
		return s, ErrNotTCP
	}
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || len(tcp) < doff || total < doff {
		return s, ErrNotTCP
	}
	s.Src = netip.AddrPortFrom(s.Src.Addr(), binary.BigEndian.Uint16(tcp[0:]))
	s.Dst = netip.AddrPortFrom(s.Dst.Addr(), binary.BigEndian.Uint16(tcp[2:]))
	s.Seq = binary.BigEndian.Uint32(tcp[4:])
	s.Ack = binary.BigEndian.Uint32(tcp[8:])
	s.Flags = tcp[13]
	s.PayloadLen = total - doff
	s.Payload = tcp[doff:]
	if len(s.Payload) > s.PayloadLen {
		s.Payload = s.Payload[:s.PayloadLen]
	}
	return s, nil
}

// alertRecords reports whether payload, a whole segment's payload, is one
// or more TLS records that each look like an alert: a record of type 21
// (an alert in TLS 1.2 and before, or a TLS 1.3 alert sent before the
// handshake keys), or a TLS 1.3 application-data record of an encrypted
// alert's length. TLS 1.3 hides the content type inside the encryption,
// so the second shape is a guess: an application's own 2-byte write, sent
// alone as the connection's last record, looks the same; and a
// close_notify is an alert too. A segment that ends inside a record, or
// that the snap cut, is not one.
func alertRecords(payload []byte) bool {
	if len(payload) == 0 {
		return false
	}
	for len(payload) > 0 {
		if len(payload) < 5 || payload[1] != 3 {
			return false
		}
		n := int(binary.BigEndian.Uint16(payload[3:]))
		switch {
		case payload[0] == recordAlert:
		case payload[0] == recordApplicationData && n == tls13AlertLength:
		default:
			return false
		}
		if len(payload) < 5+n {
			return false
		}
		payload = payload[5+n:]
	}
	return true
}
