package watch

import (
	"encoding/binary"
	"net/netip"
)

// packet builds an IPv4 or IPv6 TCP segment from its IP header on, as a
// SOCK_DGRAM packet socket hands it over.
func packet(src, dst netip.AddrPort, seq uint32, flags uint8, payload []byte) []byte {
	return packetAck(src, dst, seq, 0, flags, payload)
}

// packetAck is packet with an acknowledgement number.
func packetAck(src, dst netip.AddrPort, seq, ack uint32, flags uint8, payload []byte) []byte {
	tcp := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	tcp = append(tcp, payload...)
	if src.Addr().Is4() {
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[8], ip[9] = 64, 6
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		return append(ip, tcp...)
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
	ip[6], ip[7] = 6, 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(ip, tcp...)
}

// record builds a TLS record of type typ with n bytes of body.
func record(typ byte, n int) []byte {
	r := make([]byte, 5+n)
	r[0], r[1], r[2] = typ, 3, 3
	binary.BigEndian.PutUint16(r[3:], uint16(n))
	return r
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}
