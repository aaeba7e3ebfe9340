package watch

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Watcher reads packet sockets and counts what its Tracker concludes.
// Close stops it.
//
// What a packet socket costs the traffic it watches decides how it is
// opened:
//
//   - A socket that sees a device's outgoing packets makes the kernel
//     clone every packet the device sends (dev_queue_xmit_nit) before the
//     filter has looked at it; arriving packets are only filtered.
//     Loopback carries every packet twice, leaving and arriving, so a
//     watch of loopback reads its arriving copies only
//     (PACKET_IGNORE_OUTGOING, Linux 4.20) and takes them as sent by this
//     host, which they were.
//   - A watch of every device does that for loopback and binds one socket
//     to each other device, both ways, found again every second as
//     devices come and go. One socket per device keeps each connection's
//     packets in the order the device saw them, which the verdict needs;
//     a socket bound to every device would see loopback's leaving copies
//     too. On a kernel without PACKET_IGNORE_OUTGOING, one socket reads
//     every device both ways and the filter keeps loopback's leaving
//     copies.
//   - A packet the filter passes is copied into a ring the watcher shares
//     with the kernel (PACKET_RX_RING), not queued on the socket: a queued
//     packet is a clone of the kernel's own, whose shared data the
//     receiving TCP socket may then have to copy, and reading it takes a
//     system call. Reading a ring takes none.
type Watcher struct {
	// mode, index and name: what Start was asked to watch.
	perDevice bool // every device: each one but loopback has a ring in devices, which refresh keeps up to date
	index     int  // the one device watched, if not every one nor loopback; 0 otherwise
	name      string
	// lo is loopback's interface index; loIncoming: the rings hold
	// loopback's arriving copies, which this host sent.
	lo         int
	loIncoming bool
	ports      []uint16
	// netns is the network namespace Start was called in, open, for the
	// reader to enter: a socket and the list of devices belong to the
	// namespace of the thread that asks, and the reader's thread need not
	// be Start's. -1 when only loopback is watched.
	netns int

	done chan struct{}
	// stop is closed by Close, to end the reader.
	stop chan struct{}

	// mu guards the tracker (fed by the reader, read by Snapshot), the
	// set of rings (changed by the reader, whose drop counters Snapshot
	// reads) and the counters below. The reader owns the rings' frames;
	// Close stops the reader and then unmaps and closes them.
	mu      sync.Mutex
	rings   []*ring
	devices map[int]*ring // interface index → its ring, with perDevice
	tracker *Tracker
	packets uint64
	drops   uint64
	err     error
	// closed: the sockets are closed (or about to be); Snapshot no
	// longer asks them.
	closed bool

	closeOnce sync.Once
	last      Snapshot
	lastErr   error
}

// A ring is a packet socket and the receive ring it shares with the
// kernel: TPACKET_V2, fixed frames, each with a status word that says
// whose it is. The kernel fills frames in order and hands each to user
// space (TP_STATUS_USER); the reader parses it and hands it back
// (TP_STATUS_KERNEL). When the reader falls behind and the next frame is
// not the kernel's, the kernel drops the packet and counts it.
type ring struct {
	fd     int
	mem    []byte
	frames int
	next   int // the next frame to read
}

// Frame geometry. A frame holds the kernel's header (tpacket2_hdr, 32
// bytes), the link-layer address, and, at a 16-byte boundary after room
// for a link-layer header that SOCK_DGRAM leaves empty, the packet's Snap
// bytes: 80 + 256, in 512. A block is a page, so that the ring's memory
// needs no contiguous run of pages.
const (
	frameSize = 512
	blockSize = 4096
	// ringBytes is a ring's memory, allocated when the socket opens and
	// held until it closes: 8,192 frames, as many packets as the reader
	// may find waiting after its pause, which at its shortest (minPause)
	// is 800,000 passed packets a second, some 160,000 closes, and at
	// any length four times the rate the ring last saw. A watch of every
	// device has such a ring for loopback and one of deviceRingBytes
	// for each other device, which a host with many (a veth for each
	// container) would otherwise pay for many times over.
	ringBytes       = 4 << 20
	deviceRingBytes = 1 << 20
)

// errNoIgnoreOutgoing: the kernel predates PACKET_IGNORE_OUTGOING.
var errNoIgnoreOutgoing = errors.New("watch: no PACKET_IGNORE_OUTGOING")

// Start opens the packet sockets, attaches the filter and starts reading.
// It needs root or CAP_NET_RAW. Run it inside a network namespace's Do to
// watch that namespace: the sockets belong to the namespace of the thread
// that opens them (and the reader, which follows devices as they come
// and go, enters that namespace, which needs CAP_SYS_ADMIN when it is not
// the process's own).
func Start(cfg Config) (_ *Watcher, err error) {
	w := &Watcher{netns: -1, ports: cfg.Ports, name: cfg.Interface, done: make(chan struct{}), stop: make(chan struct{}),
		devices: map[int]*ring{}, tracker: NewTracker(cfg.Ports, cfg.MaxFlows, cfg.OnVerdict)}
	if l, err := net.InterfaceByName("lo"); err == nil {
		w.lo = l.Index
	}
	ifindex := 0
	if cfg.Interface != "" && cfg.Interface != "any" {
		ifi, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", ErrNoInterface, cfg.Interface)
		}
		ifindex = ifi.Index
	}
	plain := FilterConfig{Ports: cfg.Ports}
	if _, err := Filter(plain); err != nil {
		return nil, err // the configuration's error, before any socket
	}
	defer func() {
		if err != nil {
			w.closeAll()
		}
	}()
	switch {
	case ifindex == 0 && w.lo == 0:
		w.perDevice = true // no loopback: only the rings refresh opens
	case ifindex == 0 || ifindex == w.lo:
		// Loopback's arriving copies, taken as sent; with every device,
		// refresh adds the others.
		_, err = w.open(w.lo, plain, true, ringBytes)
		if errors.Is(err, errNoIgnoreOutgoing) {
			_, err = w.open(ifindex, FilterConfig{Ports: cfg.Ports, LoopbackIndex: w.lo}, false, ringBytes)
			break
		}
		w.loIncoming = err == nil
		w.perDevice = err == nil && ifindex == 0
	default:
		// One device that is not loopback: both ways, on one socket.
		w.index = ifindex
		_, err = w.open(ifindex, plain, false, ringBytes)
	}
	if err != nil {
		return nil, err
	}
	if w.perDevice || w.index != 0 {
		if w.netns, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return nil, os.NewSyscallError("open /proc/thread-self/ns/net", err)
		}
	}
	if w.perDevice {
		if err := w.refresh(); err != nil {
			return nil, err
		}
	}
	go w.read()
	return w, nil
}

// open opens a packet socket on ifindex (0: every device) with the filter
// cfg describes and a ring of size bytes, and, when ignoreOutgoing, asks the kernel
// for arriving packets only.
func (w *Watcher) open(ifindex int, cfg FilterConfig, ignoreOutgoing bool, size int) (*ring, error) {
	filter, err := Filter(cfg)
	if err != nil {
		return nil, err
	}
	// SOCK_DGRAM: the kernel strips the link-layer header, which differs
	// between loopback, Ethernet, veth and TUN devices, so every packet
	// starts at its IP header, where the filter and the parser begin.
	//
	// Protocol 0: the socket receives nothing until bind names a
	// protocol, so no unfiltered packet reaches it before the filter is
	// attached, nor any packet before the ring is set up.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("%w: %w", ErrPermission, os.NewSyscallError("socket(AF_PACKET)", err))
		}
		return nil, os.NewSyscallError("socket(AF_PACKET)", err)
	}
	r := &ring{fd: fd, frames: size / frameSize}
	fail := func(e error) (*ring, error) {
		r.close()
		return nil, e
	}
	prog := make([]unix.SockFilter, len(filter))
	for i, ins := range filter {
		prog[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: unsafe.SliceData(prog)}); err != nil {
		return fail(os.NewSyscallError("setsockopt(SO_ATTACH_FILTER)", err))
	}
	if ignoreOutgoing {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			if errors.Is(err, unix.ENOPROTOOPT) {
				return fail(errNoIgnoreOutgoing)
			}
			return fail(os.NewSyscallError("setsockopt(PACKET_IGNORE_OUTGOING)", err))
		}
	}
	// TPACKET_V2, not V3: V3 hands over whole blocks, retired by a
	// kernel timer per socket when they do not fill; V2 hands over each
	// frame as it is written, with no timer.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fail(os.NewSyscallError("setsockopt(PACKET_VERSION)", err))
	}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &unix.TpacketReq{
		Block_size: blockSize, Block_nr: uint32(size / blockSize),
		Frame_size: frameSize, Frame_nr: uint32(r.frames),
	}); err != nil {
		return fail(os.NewSyscallError("setsockopt(PACKET_RX_RING)", err))
	}
	if r.mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return fail(os.NewSyscallError("mmap(PACKET_RX_RING)", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fail(os.NewSyscallError("bind(AF_PACKET)", err))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rings = append(w.rings, r)
	return r, nil
}

// close unmaps the ring and closes its socket.
func (r *ring) close() error {
	var err error
	if r.mem != nil {
		err = os.NewSyscallError("munmap", unix.Munmap(r.mem))
		r.mem = nil
	}
	return errors.Join(err, os.NewSyscallError("close", unix.Close(r.fd)))
}

// refresh opens a ring for each device that is not loopback and has none,
// and closes those of devices that are gone.
func (w *Watcher) refresh() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("watch: listing devices: %w", err)
	}
	seen := make(map[int]bool, len(ifs))
	for _, ifi := range ifs {
		if ifi.Index == w.lo {
			continue
		}
		seen[ifi.Index] = true
		if _, ok := w.devices[ifi.Index]; ok {
			continue
		}
		r, err := w.open(ifi.Index, FilterConfig{Ports: w.ports}, false, deviceRingBytes)
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			continue // gone since the list was made
		}
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.devices[ifi.Index] = r
		w.mu.Unlock()
	}
	for index, r := range w.devices {
		if seen[index] {
			continue
		}
		w.mu.Lock()
		w.drainRing(r)
		w.readDrops(r)
		delete(w.devices, index)
		w.rings = deleteRing(w.rings, r)
		w.mu.Unlock()
		r.close()
	}
	return nil
}

func deleteRing(rs []*ring, r *ring) []*ring {
	for i := range rs {
		if rs[i] == r {
			return append(rs[:i], rs[i+1:]...)
		}
	}
	return rs
}

// The reader reads the rings, then sleeps, busy or idle: the sockets are
// not on the runtime's poller, which would wake a thread for every packet
// that arrives, even while the reader sleeps. A wake-up is what the
// watcher costs most (tens of microseconds on a VM, and a preemption of
// whatever ran on that CPU, the server perhaps), so the pause adapts to
// the traffic: it doubles, up to maxPause, while the fullest ring held
// less than a sixteenth of its frames, and halves, down to minPause, when
// it held more than a quarter, which leaves a ring room for four times
// the rate it last saw. No count waits for the pause: Snapshot reads the
// rings itself.
const (
	minPause = 10 * time.Millisecond
	maxPause = 200 * time.Millisecond
)

// nextPause is the pause after one that ended with the fullest ring
// holding fill of its frames.
func nextPause(pause time.Duration, fill float64) time.Duration {
	switch {
	case fill > 1.0/4:
		return max(pause/2, minPause)
	case fill < 1.0/16:
		return min(pause*2, maxPause)
	}
	return pause
}

// checkEvery is how often the reader looks for devices: new ones, when it
// watches every device (the packets of a device that appears are missed
// for up to this long), or the one it watches, which may go.
const checkEvery = time.Second

// read feeds the tracker until Close.
func (w *Watcher) read() {
	defer close(w.done)
	if w.netns >= 0 {
		// Devices are listed in the namespace of the thread that asks:
		// this goroutine keeps one thread and, if that thread is in
		// another namespace than Start's, moves it there for good (a
		// goroutine that ends locked takes its thread with it, so no
		// thread in a foreign namespace returns to the runtime).
		runtime.LockOSThread()
		if err := w.enterNetns(); err != nil {
			w.fail(err)
			return
		}
	}
	pause := minPause
	timer := time.NewTimer(pause)
	defer timer.Stop()
	checked := time.Now()
	for {
		w.mu.Lock()
		fill := 0.0 // of the fullest ring
		for _, r := range w.rings {
			fill = max(fill, float64(w.drainRing(r))/float64(r.frames))
		}
		w.mu.Unlock()
		pause = nextPause(pause, fill)
		if w.netns >= 0 && time.Since(checked) >= checkEvery {
			checked = time.Now()
			if err := w.check(); err != nil {
				w.fail(err)
				return
			}
		}
		select {
		case <-timer.C:
			timer.Reset(pause)
		case <-w.stop:
			return
		}
	}
}

// check follows the devices: it refreshes the rings of a watch of every
// device, and ends the watch of one device that is gone.
func (w *Watcher) check() error {
	if w.perDevice {
		return w.refresh()
	}
	if _, err := net.InterfaceByIndex(w.index); err != nil {
		return fmt.Errorf("%w: %q went away", ErrNoInterface, w.name)
	}
	return nil
}

// enterNetns moves the calling, locked thread into Start's namespace
// unless it is there already.
func (w *Watcher) enterNetns() error {
	var want, have unix.Stat_t
	if err := unix.Fstat(w.netns, &want); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &have); err != nil {
		return os.NewSyscallError("stat /proc/thread-self/ns/net", err)
	}
	if want.Dev == have.Dev && want.Ino == have.Ino {
		runtime.UnlockOSThread()
		return nil
	}
	if err := unix.Setns(w.netns, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("watch: following the devices of the watched network namespace: %w", os.NewSyscallError("setns", err))
	}
	return nil
}

// sockaddrOff is where a frame's link-layer address starts:
// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)).
const sockaddrOff = (unix.SizeofTpacket2Hdr + 15) &^ 15

// drainRing tracks the packets waiting in a ring, hands their frames
// back, and returns how many there were. The caller holds mu.
func (w *Watcher) drainRing(r *ring) (n int) {
	for ; ; n++ {
		base := unsafe.Pointer(&r.mem[r.next*frameSize])
		h := (*unix.Tpacket2Hdr)(base)
		// The kernel writes the frame, then its status, with a barrier
		// between; an atomic load of the status orders the frame's
		// reads after it, and the atomic store that returns the frame
		// orders them before the kernel may write it again.
		if atomic.LoadUint32(&h.Status)&unix.TP_STATUS_USER == 0 {
			return n
		}
		w.packets++
		// Net and Snaplen come from the kernel; they are held to the
		// frame anyway, so that a surprise cannot read past it.
		off, snap := int(h.Net), int(h.Snaplen)
		if off <= frameSize && snap <= frameSize-off {
			frame := unsafe.Slice((*byte)(base), frameSize)
			s, err := ParseSegment(frame[off : off+min(snap, int(h.Len), Snap)])
			if err == nil {
				from := (*unix.RawSockaddrLinklayer)(unsafe.Pointer(&frame[sockaddrOff]))
				s.Outgoing = from.Pkttype == unix.PACKET_OUTGOING || w.loIncoming && int(from.Ifindex) == w.lo
				w.tracker.Add(s)
			}
		}
		atomic.StoreUint32(&h.Status, unix.TP_STATUS_KERNEL)
		r.next = (r.next + 1) % r.frames
	}
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

// readDrops adds a socket's drop counter, which reading resets, to the
// total. The caller holds mu.
func (w *Watcher) readDrops(r *ring) {
	if st, err := unix.GetsockoptTpacketStats(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
		w.drops += uint64(st.Drops)
	}
}

// Snapshot returns the counts so far, of every packet the kernel has
// handed over: it reads what the rings hold first, rather than wait for
// the reader's next turn. Each call also reads (and so resets) the
// kernel's drop counters into the watcher's own total. It returns the
// reader's error, if reading failed.
func (w *Watcher) Snapshot() (Snapshot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		for _, r := range w.rings {
			w.drainRing(r)
			w.readDrops(r)
		}
	}
	held, evicted := w.tracker.Flows()
	return Snapshot{Ports: w.tracker.Counts(), Packets: w.packets, Drops: w.drops, Flows: held, Evicted: evicted}, w.err
}

// Close stops the watcher, reads what the rings still hold (Snapshot
// does), and returns the last snapshot. A second Close returns the same
// counts.
func (w *Watcher) Close() (Snapshot, error) {
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done
		s, err := w.Snapshot()
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		w.last, w.lastErr = s, errors.Join(err, w.closeAll())
	})
	return w.last, w.lastErr
}

// closeAll unmaps and closes every ring and descriptor the watcher holds.
// Nothing else may use them by then.
func (w *Watcher) closeAll() error {
	var errs []error
	w.mu.Lock()
	rings := w.rings
	w.rings, w.devices = nil, nil
	w.mu.Unlock()
	for _, r := range rings {
		errs = append(errs, r.close())
	}
	if w.netns >= 0 {
		errs = append(errs, os.NewSyscallError("close", unix.Close(w.netns)))
	}
	return errors.Join(errs...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
