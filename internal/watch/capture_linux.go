package watch

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Watcher reads a packet socket and counts what its Tracker concludes.
// Close stops it.
type Watcher struct {
	// fd is the packet socket, non-blocking and deliberately not on the
	// runtime's poller: the poller would wake a thread for every packet
	// that arrives, even while the reader pauses, and a wake-up costs
	// more than reading the packet. The reader owns its reads; Close
	// stops the reader and then closes fd.
	fd   int
	done chan struct{}
	// stop is closed by Close, to end the reader.
	stop chan struct{}

	// mu guards the tracker (fed by the reader, read by Snapshot) and
	// the counters below.
	mu      sync.Mutex
	tracker *Tracker
	packets uint64
	drops   uint64
	err     error
	// closed: fd is closed (or about to be); Snapshot no longer asks it.
	closed bool

	closeOnce sync.Once
	last      Snapshot
	lastErr   error
}

// Start opens the packet socket, attaches the filter and starts reading.
// It needs root or CAP_NET_RAW. Run it inside a network namespace's Do to
// watch that namespace: the socket belongs to the namespace of the thread
// that opens it.
func Start(cfg Config) (*Watcher, error) {
	ifindex, lo := 0, 0
	if l, err := net.InterfaceByName("lo"); err == nil {
		lo = l.Index
	}
	if cfg.Interface != "" && cfg.Interface != "any" {
		ifi, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", ErrNoInterface, cfg.Interface)
		}
		ifindex = ifi.Index
		if ifindex != lo {
			lo = 0 // only one device, and it is not loopback: keep both directions
		}
	}
	filter, err := Filter(FilterConfig{Ports: cfg.Ports, LoopbackIndex: lo})
	if err != nil {
		return nil, err
	}
	// SOCK_DGRAM: the kernel strips the link-layer header, which differs
	// between loopback, Ethernet, veth and TUN devices, so every packet
	// starts at its IP header, where the filter and the parser begin.
	//
	// Protocol 0: the socket receives nothing until bind names a
	// protocol, so no unfiltered packet queues on it before the filter
	// is attached.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("%w: %w", ErrPermission, os.NewSyscallError("socket(AF_PACKET)", err))
		}
		return nil, os.NewSyscallError("socket(AF_PACKET)", err)
	}
	fail := func(op string, err error) (*Watcher, error) {
		unix.Close(fd)
		return nil, os.NewSyscallError(op, err)
	}
	prog := make([]unix.SockFilter, len(filter))
	for i, ins := range filter {
		prog[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: unsafe.SliceData(prog)}); err != nil {
		return fail("setsockopt(SO_ATTACH_FILTER)", err)
	}
	// Room for a burst of closes while the reader is not scheduled: a
	// passed packet takes about 1 KiB of buffer with its overhead, so
	// 4 MiB holds some 4,000. As root past rmem_max (FORCE); otherwise
	// what rmem_max allows. Drops are counted, not hidden.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fail("bind(AF_PACKET)", err)
	}
	w := &Watcher{fd: fd, done: make(chan struct{}), stop: make(chan struct{}),
		tracker: NewTracker(cfg.Ports, cfg.MaxFlows, cfg.OnVerdict)}
	go w.read()
	return w, nil
}

// batchPause is how long the reader waits after draining the socket.
// The socket is not on the runtime's poller (see Watcher.fd): the reader
// drains it, then sleeps, 50 times a second, busy or idle (a wake-up
// costs tens of microseconds on a VM); the socket's 4 MiB buffer holds
// what arrives meanwhile (about 4,000 packets: 200,000 a second, some
// 40,000 closes). The counts are read once an interval, so 20 ms late is
// on time.
const batchPause = 20 * time.Millisecond

// batchSize is how many packets one recvmmsg call takes at most.
const batchSize = 64

// rxBatch is the memory recvmmsg fills: a buffer and a link-layer address
// for each packet, so that reading allocates nothing.
type rxBatch struct {
	bufs [batchSize][Snap]byte
	from [batchSize]unix.RawSockaddrLinklayer
	iov  [batchSize]unix.Iovec
	hdrs [batchSize]unix.Mmsghdr
}

func newRxBatch() *rxBatch {
	b := &rxBatch{}
	for i := range b.hdrs {
		b.iov[i].Base = &b.bufs[i][0]
		b.iov[i].SetLen(Snap)
		b.hdrs[i].Hdr.Iov = &b.iov[i]
		b.hdrs[i].Hdr.SetIovlen(1)
		b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.from[i]))
	}
	return b
}

// read feeds the tracker until Close, up to batchSize packets a system
// call (recvmmsg), with memory of its own: syscall.Recvfrom would
// allocate a Sockaddr for every packet.
func (w *Watcher) read() {
	defer close(w.done)
	b := newRxBatch()
	pause := time.NewTimer(batchPause)
	defer pause.Stop()
	for {
		if err := w.drain(b); err != nil {
			w.fail(err)
			return
		}
		select {
		case <-pause.C:
			pause.Reset(batchPause)
		case <-w.stop:
			return
		}
	}
}

// drain reads and tracks packets until the socket has none.
func (w *Watcher) drain(b *rxBatch) error {
	for {
		for i := range b.hdrs {
			b.hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(b.from[i]))
		}
		// MSG_TRUNC makes each length the packet's own, which the filter
		// may have cut to Snap.
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(w.fd), uintptr(unsafe.Pointer(&b.hdrs[0])), batchSize,
			unix.MSG_TRUNC, 0, 0)
		switch errno {
		case 0:
		case unix.EAGAIN:
			return nil
		case unix.EINTR:
			continue
		default:
			return os.NewSyscallError("recvmmsg", errno)
		}
		w.mu.Lock()
		for i := range int(n) {
			w.packets++
			s, err := ParseSegment(b.bufs[i][:min(int(b.hdrs[i].Len), Snap)])
			if err == nil {
				s.Outgoing = b.from[i].Pkttype == unix.PACKET_OUTGOING
				w.tracker.Add(s)
			}
		}
		w.mu.Unlock()
		if n < batchSize {
			return nil
		}
	}
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// Snapshot returns the counts so far. Each call also reads (and so
// resets) the kernel's drop counter into the watcher's own total. It
// returns the reader's error, if reading failed.
func (w *Watcher) Snapshot() (Snapshot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		if st, err := unix.GetsockoptTpacketStats(w.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			w.drops += uint64(st.Drops)
		}
	}
	held, evicted := w.tracker.Flows()
	return Snapshot{Ports: w.tracker.Counts(), Packets: w.packets, Drops: w.drops, Flows: held, Evicted: evicted}, w.err
}

// Close stops the watcher, reads what the socket still holds, and returns
// the last snapshot. A second Close returns the same counts.
func (w *Watcher) Close() (Snapshot, error) {
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done
		b := newRxBatch()
		if err := w.drain(b); err != nil {
			w.fail(err)
		}
		s, err := w.Snapshot()
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		w.last, w.lastErr = s, errors.Join(err, os.NewSyscallError("close", unix.Close(w.fd)))
	})
	return w.last, w.lastErr
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
