package watch

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Snap is how much of a packet the filter lets through: an IPv6 header, a
// TCP header with every option, and a few alert records after it.
const Snap = 256

// TCP flag bits, in the header's byte 13.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagACK = 0x10
)

// TLS record content types the verdict looks at.
const (
	recordAlert           = 21
	recordApplicationData = 23
	// tls13AlertLength is the length field of a TLS 1.3 record that
	// carries an alert: the alert's 2 bytes, the inner content type,
	// and the AEAD's 16-byte tag (every TLS 1.3 suite but the rare
	// TLS_AES_128_CCM_8_SHA256, whose 8-byte tag makes it 11).
	tls13AlertLength = 2 + 1 + 16
)

// FilterConfig says what the kernel filter passes.
type FilterConfig struct {
	// Ports, when not empty, passes only segments to or from these TCP
	// ports.
	Ports []uint16
	// LoopbackIndex, when positive, is the loopback device's index:
	// a packet on loopback is seen twice, leaving and arriving, and the
	// filter keeps only its leaving copy. Zero keeps both, for a socket
	// bound to one device that is not loopback, and for the
	// user-space VM, which has no interface index.
	LoopbackIndex int
}

// Filter returns the classic BPF program for a SOCK_DGRAM packet socket
// (every packet starts at its IP header) that passes, cut to Snap bytes,
// only the TCP segments the verdict needs: SYN-ACKs (a connection's start
// and its server), FINs and RSTs, and segments whose payload starts with a
// TLS record shaped like an alert (a record of type 21, or a TLS 1.3
// application-data record of an encrypted alert's length). Everything else
// (a request's upload, a response's body, pure acknowledgements) stays in
// the kernel, so the watcher's cost follows connections closed, not bytes.
// IPv4 fragments after the first and IPv6 packets whose next header is not
// TCP (extension headers) are not seen.
//
// The filter runs for every packet the device carries, in the context of
// whoever sends or receives it, so it is laid out for speed: the kernel
// turns a load at a fixed offset (LoadAbsolute) into a bounds check and a
// load, but a load at an offset from X (LoadIndirect) into a function
// call. IPv4 without options and IPv6 put the TCP header at a fixed
// offset, and a TCP header of 20 bytes, or of 32 (timestamps, as Linux
// sends), puts the payload at one; each such packet is read with fixed
// offsets only, and anything else by the general, indirect path.
func Filter(cfg FilterConfig) ([]bpf.RawInstruction, error) {
	if len(cfg.Ports) > 100 {
		return nil, fmt.Errorf("watch: %d ports: at most 100", len(cfg.Ports))
	}
	var p prog
	if cfg.LoopbackIndex > 0 {
		p.add(bpf.LoadExtension{Num: bpf.ExtInterfaceIndex})
		p.jump(bpf.JumpEqual, uint32(cfg.LoopbackIndex), "", "ip")
		p.add(bpf.LoadExtension{Num: bpf.ExtType})
		p.jump(bpf.JumpEqual, 4 /* PACKET_OUTGOING */, "ip", "ipdrop")
	}
	p.label("ip")
	p.add(bpf.LoadAbsolute{Off: 0, Size: 1})
	p.add(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4})
	p.jump(bpf.JumpEqual, 4, "", "notv4")
	p.add(bpf.LoadAbsolute{Off: 9, Size: 1})
	p.jump(bpf.JumpEqual, 6 /* TCP */, "", "ipdrop")
	p.add(bpf.LoadAbsolute{Off: 6, Size: 2})
	p.jump(bpf.JumpBitsSet, 0x1fff, "ipdrop", "") // not the first fragment
	p.add(bpf.LoadAbsolute{Off: 0, Size: 1})
	p.jump(bpf.JumpEqual, 0x45, "", "v4options") // a 20-byte header
	p.jumpAlways("tcp20")
	p.label("v4options")
	p.add(bpf.LoadMemShift{Off: 0}) // X = 4 * IHL
	p.jumpAlways("tcpX")
	p.label("notv4")
	p.jump(bpf.JumpEqual, 6, "", "ipdrop")
	p.label("v6")
	p.add(bpf.LoadAbsolute{Off: 6, Size: 1})
	p.jump(bpf.JumpEqual, 6, "", "ipdrop")
	p.jumpAlways("tcp40")
	p.label("ipdrop")
	p.add(bpf.RetConstant{Val: 0})

	// Each TCP block ends with returns of its own, so that its jumps
	// stay short (a conditional jump skips at most 255 instructions)
	// whatever the number of ports.
	p.label("tcp20")
	p.tcp("a", 20, cfg.Ports)
	p.label("tcp40")
	p.tcp("b", 40, cfg.Ports)
	p.label("tcpX")
	p.tcp("x", -1, cfg.Ports)
	return p.assemble()
}

// tcp adds the checks of a TCP header at offset off from the IP header,
// or at X when off is negative, with labels that start with name.
func (p *prog) tcp(name string, off int, ports []uint16) {
	load := func(at, size int) { p.load(off, at, size) }
	pass, drop := name+"pass", name+"drop"
	if len(ports) > 0 {
		for _, at := range []int{0, 2} { // source, destination
			load(at, 2)
			for _, port := range ports {
				p.jump(bpf.JumpEqual, uint32(port), name+"port", "")
			}
		}
		p.jumpAlways(drop)
	}
	p.label(name + "port")
	load(13, 1)
	p.jump(bpf.JumpBitsSet, flagFIN|flagRST, pass, "")
	p.add(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: flagSYN | flagACK})
	p.jump(bpf.JumpEqual, flagSYN|flagACK, pass, "")
	load(12, 1)
	p.add(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0}) // the header's length, in words, times 16
	if off >= 0 {
		p.jump(bpf.JumpEqual, 5<<4, name+"20", "")
		p.jump(bpf.JumpEqual, 8<<4, name+"32", "")
		// X = off + the header's length: the payload's offset.
		p.add(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2})
		p.add(bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: uint32(off)})
	} else {
		// X += the header's length.
		p.add(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2})
		p.add(bpf.ALUOpX{Op: bpf.ALUOpAdd})
	}
	p.add(bpf.TAX{})
	// A load past the packet's end ends the program with 0 (drop), so a
	// segment without payload goes no further.
	p.record(-1, pass, drop)
	if off >= 0 {
		p.label(name + "20")
		p.record(off+20, pass, drop)
		p.label(name + "32")
		p.record(off+32, pass, drop)
	}
	p.label(pass)
	p.add(bpf.RetConstant{Val: Snap})
	p.label(drop)
	p.add(bpf.RetConstant{Val: 0})
}

// record adds the check of a payload that starts at offset off, or at X
// when off is negative: an alert-shaped TLS record goes to pass, anything
// else to drop.
func (p *prog) record(off int, pass, drop string) {
	p.load(off, 0, 1)
	p.jump(bpf.JumpEqual, recordAlert, pass, "")
	p.jump(bpf.JumpEqual, recordApplicationData, "", drop)
	p.load(off, 3, 2)
	p.jump(bpf.JumpEqual, tls13AlertLength, pass, drop)
}

// load adds a load of size bytes at offset at from base, a fixed offset
// from the IP header, or X when base is negative.
func (p *prog) load(base, at, size int) {
	if base < 0 {
		p.add(bpf.LoadIndirect{Off: uint32(at), Size: size})
	} else {
		p.add(bpf.LoadAbsolute{Off: uint32(base + at), Size: size})
	}
}

// prog assembles a classic BPF program whose jumps name labels, so that
// nobody counts skipped instructions by hand. An empty label in a jump
// means the next instruction.
type prog struct {
	ins    []bpf.Instruction
	labels map[string]int
	jumps  []pending
}

type pending struct {
	at            int
	cond          bpf.JumpTest
	val           uint32
	yes, no       string
	unconditional bool
}

func (p *prog) add(i bpf.Instruction) { p.ins = append(p.ins, i) }

func (p *prog) label(name string) {
	if p.labels == nil {
		p.labels = map[string]int{}
	}
	p.labels[name] = len(p.ins)
}

func (p *prog) jump(cond bpf.JumpTest, val uint32, yes, no string) {
	p.jumps = append(p.jumps, pending{at: len(p.ins), cond: cond, val: val, yes: yes, no: no})
	p.ins = append(p.ins, nil)
}

func (p *prog) jumpAlways(to string) {
	p.jumps = append(p.jumps, pending{at: len(p.ins), yes: to, unconditional: true})
	p.ins = append(p.ins, nil)
}

func (p *prog) assemble() ([]bpf.RawInstruction, error) {
	skip := func(from int, to string) (uint32, error) {
		if to == "" {
			return 0, nil
		}
		at, ok := p.labels[to]
		if !ok || at <= from {
			return 0, fmt.Errorf("watch: filter: no label %q after instruction %d", to, from)
		}
		return uint32(at - from - 1), nil
	}
	for _, j := range p.jumps {
		yes, err := skip(j.at, j.yes)
		if err != nil {
			return nil, err
		}
		if j.unconditional {
			p.ins[j.at] = bpf.Jump{Skip: yes}
			continue
		}
		no, err := skip(j.at, j.no)
		if err != nil {
			return nil, err
		}
		if yes > 255 || no > 255 {
			return nil, fmt.Errorf("watch: filter: jump at %d too long", j.at)
		}
		p.ins[j.at] = bpf.JumpIf{Cond: j.cond, Val: j.val, SkipTrue: uint8(yes), SkipFalse: uint8(no)}
	}
	return bpf.Assemble(p.ins)
}
