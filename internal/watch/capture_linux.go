package watch

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Watcher reads a packet socket and counts what its Tracker concludes.
// Close stops it.
type Watcher struct {
	f    *os.File
	done chan struct{}
	// stop is closed by Close, to end the reader's pause between
	// batches.
	stop chan struct{}
	// closing is set before Close closes f, so that the reader takes the
	// error that wakes it for the end it is.
	closing atomic.Bool

	// mu guards the tracker (fed by the reader, read by Snapshot) and
	// the counters below.
	mu      sync.Mutex
	tracker *Tracker
	packets uint64
	drops   uint64
	err     error
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
	w := &Watcher{f: os.NewFile(uintptr(fd), "packet"), done: make(chan struct{}), stop: make(chan struct{}),
		tracker: NewTracker(cfg.Ports, cfg.MaxFlows, cfg.OnVerdict)}
	go w.read()
	return w, nil
}

// batchPause is how long the reader waits, after draining the socket,
// before it asks the poller again. Waking a goroutine costs several
// microseconds of scheduler work, more than reading a packet; with the
// pause a busy host costs at most 200 wake-ups a second, and the socket's
// buffer holds what arrives meanwhile (about 4,000 packets, 400,000 a
// second). The counts are read once an interval, so 5 ms late is on time.
const batchPause = 5 * time.Millisecond

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
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.fail(err)
		return
	}
	b := newRxBatch()
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		var rerr error
		got := 0
		err := rc.Read(func(fd uintptr) bool {
			for {
				for i := range b.hdrs {
					b.hdrs[i].Hdr.Namelen = uint32(unsafe.Sizeof(b.from[i]))
				}
				// MSG_TRUNC makes each length the packet's own, which the
				// filter may have cut to Snap.
				n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), batchSize,
					unix.MSG_TRUNC, 0, 0)
				switch errno {
				case 0:
				case unix.EAGAIN:
					// Nothing yet: wait in the poller. Drained: pause.
					return got > 0
				case unix.EINTR:
					continue
				default:
					rerr = os.NewSyscallError("recvmmsg", errno)
					return true
				}
				got += int(n)
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
					return true // drained
				}
			}
		})
		if err != nil || rerr != nil {
			if !w.closing.Load() {
				w.fail(errors.Join(err, rerr))
			}
			return
		}
		pause.Reset(batchPause)
		select {
		case <-pause.C:
		case <-w.stop:
			return
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
	var st *unix.TpacketStats
	if rc, err := w.f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			st, _ = unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
		})
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if st != nil {
		w.drops += uint64(st.Drops)
	}
	held, evicted := w.tracker.Flows()
	return Snapshot{Ports: w.tracker.Counts(), Packets: w.packets, Drops: w.drops, Flows: held, Evicted: evicted}, w.err
}

// Close stops the watcher and returns its last snapshot.
func (w *Watcher) Close() (Snapshot, error) {
	s, err := w.Snapshot()
	w.closing.Store(true)
	close(w.stop)
	cerr := w.f.Close()
	<-w.done
	return s, errors.Join(err, cerr)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
