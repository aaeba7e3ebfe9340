package testbed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An RSTCapture counts the TCP resets a server sends, as the wire carries
// them: a packet socket sees every segment leaving an interface, whatever
// the sockets at either end made of it. Close stops it.
type RSTCapture struct {
	port int
	f    *os.File
	done chan struct{}
	// closing is set before Close closes f, so that the reader takes the
	// error that wakes it for the end it is.
	closing atomic.Bool

	mu   sync.Mutex
	rsts map[int]int // by the peer's port
	err  error
}

// snap is how much of a packet the kernel hands over: enough for an IPv6
// header and a TCP header with options.
const snap = 128

// rstFilter is a classic BPF program that passes, cut to snap bytes, only
// the TCP segments with RST set that leave the host (a packet sent on
// loopback is seen twice, leaving and arriving), so that a large upload's
// segments and acknowledgements never queue on the capture. With SOCK_DGRAM
// the program sees the packet from its IP header.
var rstFilter = func() []unix.SockFilter {
	const (
		adPkttype = 0xfffff000 + 4 // SKF_AD_OFF + SKF_AD_PKTTYPE
		ld        = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		ldb       = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
		ldbx      = unix.BPF_LD | unix.BPF_B | unix.BPF_IND
		ldxmsh    = unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH
		rsh       = unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K
		jeq       = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jset      = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret       = unix.BPF_RET | unix.BPF_K
	)
	// Jump offsets count the instructions skipped after the jump.
	return []unix.SockFilter{
		/* 0 */ {Code: ld, K: adPkttype},
		/* 1 */ {Code: jeq, K: syscall.PACKET_OUTGOING, Jf: 14},
		/* 2 */ {Code: ldb, K: 0},
		/* 3 */ {Code: rsh, K: 4},
		/* 4 */ {Code: jeq, K: 4, Jt: 1},
		/* 5 */ {Code: jeq, K: 6, Jt: 5, Jf: 10},
		/* 6 IPv4 */ {Code: ldb, K: 9},
		/* 7 */ {Code: jeq, K: syscall.IPPROTO_TCP, Jf: 8},
		/* 8 */ {Code: ldxmsh, K: 0}, // X = 4 * IHL
		/* 9 */ {Code: ldbx, K: 13}, // TCP flags
		/* 10 */ {Code: jset, K: 0x04, Jt: 4, Jf: 5},
		/* 11 IPv6 */ {Code: ldb, K: 6},
		/* 12 */ {Code: jeq, K: syscall.IPPROTO_TCP, Jf: 3},
		/* 13 */ {Code: ldb, K: 40 + 13},
		/* 14 */ {Code: jset, K: 0x04, Jf: 1},
		/* 15 */ {Code: ret, K: snap},
		/* 16 */ {Code: ret, K: 0},
	}
}()

// CaptureRSTs starts counting the RSTs sent from TCP port port on the
// interface named ifname ("" for every interface of the calling thread's
// network namespace; run it inside Netns.Do to capture in a namespace). It
// needs CAP_NET_RAW.
func CaptureRSTs(ifname string, port int) (*RSTCapture, error) {
	// SOCK_DGRAM: the kernel strips the link-layer header, which differs
	// between loopback, veth and TUN devices, so every packet starts at
	// its IP header.
	//
	// Protocol 0: the socket receives nothing until bind names a protocol,
	// so no packet queues on it before the filter is in place (a busy
	// loopback would fill its buffer in that moment and count drops).
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket(AF_PACKET)", err)
	}
	fail := func(op string, err error) (*RSTCapture, error) {
		syscall.Close(fd)
		return nil, os.NewSyscallError(op, err)
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(rstFilter)), Filter: unsafe.SliceData(rstFilter)}); err != nil {
		return fail("setsockopt(SO_ATTACH_FILTER)", err)
	}
	// Room for bursts of RSTs while the reader is not scheduled (a loaded
	// machine); FORCE, as root, past rmem_max. Close reports drops anyway.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	ifindex := 0 // every interface
	if ifname != "" {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			syscall.Close(fd)
			return nil, fmt.Errorf("capture on %s: %w", ifname, err)
		}
		ifindex = ifi.Index
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fail("bind(AF_PACKET)", err)
	}
	// Non-blocking, so os.NewFile puts it on the runtime's poller and
	// Close wakes the reader.
	c := &RSTCapture{port: port, f: os.NewFile(uintptr(fd), "packet"), done: make(chan struct{}), rsts: map[int]int{}}
	go c.read()
	return c, nil
}

func (c *RSTCapture) read() {
	defer close(c.done)
	rc, err := c.f.SyscallConn()
	if err != nil {
		c.fail(err)
		return
	}
	buf := make([]byte, snap)
	for {
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, from, err := syscall.Recvfrom(int(fd), buf, 0)
				if err == syscall.EAGAIN {
					return false
				}
				if err != nil {
					rerr = err
					return true
				}
				// A packet sent on loopback is seen twice, leaving and
				// arriving; a server's RST leaves its interface once.
				if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == syscall.PACKET_OUTGOING {
					c.count(buf[:n])
				}
			}
		})
		if err != nil || rerr != nil {
			if !c.closing.Load() {
				c.fail(errors.Join(err, rerr))
			}
			return
		}
	}
}

// count counts p if it is a TCP RST from the server's port.
func (c *RSTCapture) count(p []byte) {
	var tcp []byte
	switch {
	case len(p) >= 20 && p[0]>>4 == 4 && p[9] == syscall.IPPROTO_TCP:
		tcp = p[int(p[0]&0xf)*4:]
	case len(p) >= 40 && p[0]>>4 == 6 && p[6] == syscall.IPPROTO_TCP:
		tcp = p[40:]
	}
	if len(tcp) < 14 || int(binary.BigEndian.Uint16(tcp)) != c.port || tcp[13]&0x04 == 0 {
		return
	}
	c.mu.Lock()
	c.rsts[int(binary.BigEndian.Uint16(tcp[2:]))]++
	c.mu.Unlock()
}

func (c *RSTCapture) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// RSTs returns the RSTs counted so far, by the peer's port.
func (c *RSTCapture) RSTs() map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[int]int, len(c.rsts))
	for k, v := range c.rsts {
		m[k] = v
	}
	return m
}

// ErrCaptureDropped is returned by Close when the kernel dropped packets
// the capture should have counted: its counts are then too low.
var ErrCaptureDropped = errors.New("testbed: the packet capture dropped packets")

// Close stops the capture and returns its error: reading failed, or the
// kernel dropped packets (ErrCaptureDropped).
func (c *RSTCapture) Close() error {
	var dropped uint32
	if rc, err := c.f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
				dropped = st.Drops
			}
		})
	}
	c.closing.Store(true)
	err := c.f.Close()
	if dropped > 0 {
		err = errors.Join(err, fmt.Errorf("%w: %d", ErrCaptureDropped, dropped))
	}
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(err, c.err)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
