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
// header and a TCP header with options. The socket's filter passes only
// packets this short, which every RST is and most data segments are not,
// so a large upload does not fill the socket's buffer.
const snap = 128

// CaptureRSTs starts counting the RSTs sent from TCP port port on the
// interface named ifname ("" for every interface of the calling thread's
// network namespace; run it inside Netns.Do to capture in a namespace). It
// needs CAP_NET_RAW.
func CaptureRSTs(ifname string, port int) (*RSTCapture, error) {
	// SOCK_DGRAM: the kernel strips the link-layer header, which differs
	// between loopback, veth and TUN devices, so every packet starts at
	// its IP header.
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC,
		int(htons(syscall.ETH_P_ALL)))
	if err != nil {
		return nil, os.NewSyscallError("socket(AF_PACKET)", err)
	}
	fail := func(op string, err error) (*RSTCapture, error) {
		syscall.Close(fd)
		return nil, os.NewSyscallError(op, err)
	}
	// Accept only short packets, cut to snap bytes (classic BPF: load the
	// length, drop above snap, else keep snap bytes).
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_LEN},
		{Code: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, Jt: 1, K: snap},
		{Code: unix.BPF_RET | unix.BPF_K, K: snap},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: unsafe.SliceData(prog)}); err != nil {
		return fail("setsockopt(SO_ATTACH_FILTER)", err)
	}
	if ifname != "" {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			syscall.Close(fd)
			return nil, fmt.Errorf("capture on %s: %w", ifname, err)
		}
		if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			return fail("bind(AF_PACKET)", err)
		}
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

// Close stops the capture and returns its error, if reading failed.
func (c *RSTCapture) Close() error {
	c.closing.Store(true)
	err := c.f.Close()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(err, c.err)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
