//go:build linux

package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps its named namespaces: a bind mount of
// each namespace's nsfs inode, which keeps the namespace alive without a
// process in it and lets `ip netns exec` find it by name.
const netnsDir = "/var/run/netns"

// namePrefix starts every namespace name NewPair makes. The full name is
// "lg-PID-N-s" (server) or "lg-PID-N-c" (client): the process id keeps
// concurrent processes apart and lets CleanupStale recognize leftovers of
// dead ones, the sequence number keeps parallel tests of one process apart.
const namePrefix = "lg-"

// devName is the name of the link device in both namespaces. Each
// namespace has its own set of device names, so it never collides.
const devName = "lg0"

var pairSeq atomic.Uint64

// A Pair is two fresh network namespaces, a server and a client, joined by
// a path with the delay and loss of its PathConfig. Nothing in either
// namespace can reach the host's network: each has its loopback device and
// the link to the other, with addresses from TEST-NET-1 (RFC 5737) and no
// default route.
type Pair struct {
	// Server and Client are the two namespaces.
	Server, Client *Namespace
	// ServerIP (192.0.2.1) is the server's address on the link, ClientIP
	// (192.0.2.2) the client's.
	ServerIP, ClientIP netip.Addr
	// Path is the configuration the pair was made with.
	Path PathConfig

	fwd       *forwarder // nil for a veth pair
	closeOnce sync.Once
	closeErr  error
}

// NewPair makes two fresh namespaces joined by the path cfg describes. A
// zero Delay joins them with a veth pair whose segmentation offloads are
// off, so that one packet on the link is one packet dropped, and drops
// Loss with an nftables rule at each receiver. A positive Delay joins them
// with a TUN device in each namespace and a forwarder in this process that
// holds every packet for Delay and drops Loss of them.
//
// The caller must call Close. If NewPair fails it removes what it had
// made. It needs root and the ip command (iproute2), and nft (nftables)
// for a veth pair with loss.
func NewPair(cfg PathConfig) (_ *Pair, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	base := fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), pairSeq.Add(1))
	p := &Pair{
		ServerIP: netip.AddrFrom4([4]byte{192, 0, 2, 1}),
		ClientIP: netip.AddrFrom4([4]byte{192, 0, 2, 2}),
		Path:     cfg,
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close())
		}
	}()
	if p.Server, err = newNamespace(base + "-s"); err != nil {
		return nil, err
	}
	if p.Client, err = newNamespace(base + "-c"); err != nil {
		return nil, err
	}
	if cfg.Delay == 0 {
		err = p.joinVeth()
	} else {
		err = p.joinTUN()
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Close removes everything the pair made: it stops the forwarder and waits
// for its goroutines, closes its descriptors, and deletes both namespaces
// and with them their devices and nftables tables. Sockets still open in a
// namespace keep the kernel's namespace alive, unnamed, until they are
// closed. Close is idempotent; later calls return the first call's error.
func (p *Pair) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		if p.fwd != nil {
			// Before the namespaces: closing the TUN descriptors is what
			// removes the TUN devices, and the forwarder must not write
			// to a device that is going away.
			errs = append(errs, p.fwd.close())
		}
		for _, ns := range []*Namespace{p.Client, p.Server} {
			if ns != nil {
				errs = append(errs, ns.remove())
			}
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// joinVeth links the namespaces with a veth pair.
func (p *Pair) joinVeth() error {
	// Made in the server's namespace with its peer placed straight into
	// the client's, so no device ever appears in the host's namespace.
	if err := run("ip", "-n", p.Server.Name, "link", "add", devName, "type", "veth",
		"peer", "name", devName, "netns", p.Client.Name); err != nil {
		return err
	}
	for _, side := range []struct {
		ns       *Namespace
		me, peer netip.Addr
	}{{p.Server, p.ServerIP, p.ClientIP}, {p.Client, p.ClientIP, p.ServerIP}} {
		// Without offloads TCP hands the device MSS-sized segments
		// instead of 64 KiB super-packets (TSO/GSO), and the receiver
		// does not merge them (GRO), so the loss rule drops packets as a
		// real link would, not a whole burst at once.
		if err := side.ns.Do(func() error { return offloadsOff(devName) }); err != nil {
			return err
		}
		if err := side.ns.configure(side.me); err != nil {
			return err
		}
		if p.Path.Loss > 0 {
			if err := side.ns.dropFrom(side.peer, p.Path.Loss); err != nil {
				return err
			}
		}
	}
	return nil
}

// joinTUN links the namespaces with a TUN device in each and a forwarder.
func (p *Pair) joinTUN() error {
	var files [2]*os.File
	for i, ns := range []*Namespace{p.Server, p.Client} {
		f, err := ns.openTUN(devName)
		if err != nil {
			if files[0] != nil {
				files[0].Close()
			}
			return err
		}
		files[i] = f
	}
	// From here on Close owns the descriptors.
	p.fwd = startForwarder(p.Path, files[0], files[1])
	if err := p.Server.configure(p.ServerIP); err != nil {
		return err
	}
	return p.Client.configure(p.ClientIP)
}

// A Namespace is a named network namespace, as `ip netns` names them.
type Namespace struct {
	// Name is the namespace's name for `ip netns` and `ip -n`.
	Name string

	mu sync.RWMutex
	fd int // the namespace itself, for setns; -1 once removed
}

func newNamespace(name string) (*Namespace, error) {
	if err := run("ip", "netns", "add", name); err != nil {
		return nil, err
	}
	// Held open for Do: setns needs a descriptor, and opening it once
	// keeps the namespace reachable even if someone deletes the name.
	fd, err := unix.Open(netnsDir+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		err = &os.PathError{Op: "open", Path: netnsDir + "/" + name, Err: err}
		return nil, errors.Join(err, run("ip", "netns", "delete", name))
	}
	return &Namespace{Name: name, fd: fd}, nil
}

// remove closes the namespace's descriptor and deletes its name. The
// kernel frees the namespace once nothing refers to it any more.
func (n *Namespace) remove() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd < 0 {
		return nil
	}
	unix.Close(n.fd)
	n.fd = -1
	return run("ip", "netns", "delete", n.Name)
}

// Do runs fn on an OS thread switched into the namespace, then switches the
// thread back. Sockets and devices fn creates belong to the namespace for
// their whole life, wherever they are used afterwards; that is the point of
// Do. Goroutines fn starts run on other threads, outside the namespace, and
// so does anything the runtime does on fn's behalf in another goroutine
// (such as resolving a host name).
func (n *Namespace) Do(fn func() error) error {
	// A namespace is a property of a thread, not of a goroutine: pin the
	// goroutine so that the scheduler cannot move fn to another thread,
	// nor give this thread to another goroutine while it is switched.
	// While the thread is locked, the runtime also creates new threads
	// from a clean template thread rather than cloning this one, so the
	// namespace does not leak into the process's other threads.
	runtime.LockOSThread()
	// The thread's namespace now, which need not be the process's (Do
	// may be nested): this is what to return to.
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: %s: open own namespace: %w", n.Name, err)
	}
	defer unix.Close(orig)
	if err := n.enter(); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer func() {
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Cannot happen with a descriptor we hold open. If it did,
			// the thread would be stuck in the wrong namespace: staying
			// locked makes the runtime end the thread when the
			// goroutine exits instead of reusing it, and the panic
			// stops the caller from carrying on in the wrong place.
			panic(fmt.Sprintf("netns: cannot leave namespace %s: %v", n.Name, err))
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// enter switches the calling thread into n. setns(2) with CLONE_NEWNET
// changes only the calling thread, unlike a mount or user namespace, so
// it is allowed in a multi-threaded process.
func (n *Namespace) enter() error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.fd < 0 {
		return fmt.Errorf("netns: namespace %s is closed", n.Name)
	}
	if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("netns: setns %s: %w", n.Name, err)
	}
	return nil
}

// Listen is net.Listen inside the namespace.
func (n *Namespace) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// ListenPacket is net.ListenPacket inside the namespace.
func (n *Namespace) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// DialContext is net.Dialer.DialContext from inside the namespace. The
// address should be an IP literal: a host name is resolved outside the
// namespace.
func (n *Namespace) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		// A negative FallbackDelay turns off Happy Eyeballs, which would
		// dial from other goroutines, on threads outside the namespace.
		d := net.Dialer{FallbackDelay: -1}
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Command returns a command that runs name with args inside the namespace,
// through `ip netns exec`, for programs such as curl and openssl. The
// ip command execs the program, so cancelling ctx kills the program
// itself.
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Counters reads the namespace's TCP counters. Every network namespace
// has its own, so they count only what happened inside it.
func (n *Namespace) Counters() (c Counters, err error) {
	err = n.Do(func() error {
		c, err = ReadCounters()
		if err != nil {
			return fmt.Errorf("netns: %s: %w", n.Name, err)
		}
		return nil
	})
	return c, err
}

// ReadCounters reads the TCP counters of the calling thread's network
// namespace: the host's, unless called inside a Namespace's Do.
func ReadCounters() (Counters, error) {
	c := Counters{All: make(map[string]uint64)}
	// /proc/self/net shows the namespace of the process's main thread;
	// /proc/thread-self/net that of this (possibly switched) thread.
	for _, f := range []string{"netstat", "snmp"} {
		b, err := os.ReadFile("/proc/thread-self/net/" + f)
		if err != nil {
			return Counters{}, err
		}
		if err := parseProcNet(b, c.All); err != nil {
			return Counters{}, fmt.Errorf("/proc/net/%s: %w", f, err)
		}
	}
	c.AbortOnClose = c.All["TcpExtTCPAbortOnClose"]
	c.AbortOnData = c.All["TcpExtTCPAbortOnData"]
	c.OutRsts = c.All["TcpOutRsts"]
	c.RetransSegs = c.All["TcpRetransSegs"]
	return c, nil
}

// parseProcNet adds the counters of /proc/net/netstat or /proc/net/snmp to
// m. Both files come in pairs of lines, names then values, each starting
// with the same "Proto:" prefix; keys join the prefix and the name, as
// nstat does.
func parseProcNet(b []byte, m map[string]uint64) error {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines)%2 != 0 {
		return errors.New("odd number of lines")
	}
	for i := 0; i < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) != len(values) || len(names) == 0 || names[0] != values[0] {
			return fmt.Errorf("mismatched lines %q and %q", names, values)
		}
		proto := strings.TrimSuffix(names[0], ":")
		for j := 1; j < len(names); j++ {
			// Some counters (Tcp MaxConn) are signed; keep their bits.
			v, err := strconv.ParseInt(values[j], 10, 64)
			if err != nil {
				u, uerr := strconv.ParseUint(values[j], 10, 64)
				if uerr != nil {
					return err
				}
				v = int64(u)
			}
			m[proto+names[j]] = uint64(v)
		}
	}
	return nil
}

// configure brings up loopback and the link device with address addr/24.
func (n *Namespace) configure(addr netip.Addr) error {
	// One ip process for the three commands; ip exits at the first
	// failing one. A fresh namespace's loopback is down, and much
	// software expects 127.0.0.1 to work.
	return runInput(fmt.Sprintf("link set lo up\naddr add %s/24 dev %s\nlink set %s up\n",
		addr, devName, devName), "ip", "-n", n.Name, "-batch", "-")
}

// dropFrom makes n drop the fraction loss of the IPv4 packets arriving
// from peer. Dropping at the receiver, before routing, looks to the sender
// like loss on the wire. Dropping in the sender's output hook would not:
// the kernel reports the drop to the sending socket (EPERM), and TCP
// treats a segment it could not send as never sent rather than lost.
// nftables has no netem and this kernel has no `meta random`, but numgen
// random does; the modulus gives a resolution of one in a million. The
// table lives and dies with the namespace.
func (n *Namespace) dropFrom(peer netip.Addr, loss float64) error {
	const mod = 1000000
	rule := fmt.Sprintf(`table ip linger_netns {
	chain loss {
		type filter hook prerouting priority raw; policy accept;
		ip saddr %s numgen random mod %d < %d counter drop
	}
}
`, peer, mod, int(loss*mod+0.5))
	// Look nft up here: through ip netns exec, a missing one is only an
	// exit status.
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("netns: loss on a veth pair needs nft (Debian: apt-get install nftables): %w", err)
	}
	return runInput(rule, "ip", "netns", "exec", n.Name, "nft", "-f", "-")
}

// openTUN creates a TUN device in n and returns its descriptor as a file
// in the runtime's poller.
func (n *Namespace) openTUN(name string) (*os.File, error) {
	var fd int
	err := n.Do(func() (err error) {
		// The device is created in the namespace of the thread that
		// opens /dev/net/tun, hence inside Do. O_NONBLOCK matters: see
		// forwarder.
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err}
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		// IFF_TUN: IP packets, no Ethernet header and so no ARP.
		// IFF_NO_PI: no 4-byte packet information header either, so a
		// read is exactly one IP packet. Without IFF_VNET_HDR the device
		// offers no segmentation offloads, so the kernel never hands us
		// a packet larger than the MTU.
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("netns: TUNSETIFF %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The device lives as long as this descriptor (it is not persistent).
	return os.NewFile(uintptr(fd), "tun:"+n.Name+"/"+name), nil
}

// offloadsOff turns off TCP segmentation offload, generic segmentation
// offload and generic receive offload on dev, like `ethtool -K dev tso off
// gso off gro off` but without needing ethtool: the legacy per-feature
// ethtool ioctls still work and take a plain struct ethtool_value.
func offloadsOff(dev string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	for _, cmd := range []uint32{unix.ETHTOOL_STSO, unix.ETHTOOL_SGSO, unix.ETHTOOL_SGRO} {
		// struct ethtool_value { __u32 cmd; __u32 data; }; data 0: off.
		val := struct{ cmd, data uint32 }{cmd, 0}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer // ifr_data: the kernel reads val through it
			_    [24 - unsafe.Sizeof(uintptr(0))]byte
		}
		copy(ifr.name[:], dev)
		ifr.data = unsafe.Pointer(&val)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(s), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(&val)
		if errno != 0 {
			return fmt.Errorf("netns: ethtool ioctl %#x on %s: %w", cmd, dev, errno)
		}
	}
	return nil
}

// CleanupStale deletes the namespaces that NewPair made in processes that
// are no longer alive, such as a lab killed by SIGKILL, which never ran
// Close. Deleting a namespace removes its devices and nftables tables too.
// Namespaces of live processes, including this one, are left alone.
func CleanupStale() error {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		pid, ok := stalePID(e.Name())
		if !ok {
			continue
		}
		// Signal 0 checks that the process exists without touching it.
		// EPERM would mean it exists under another user.
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			continue
		}
		errs = append(errs, run("ip", "netns", "delete", e.Name()))
	}
	return errors.Join(errs...)
}

// stalePID returns the process id in a namespace name NewPair made.
func stalePID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, false
	}
	pidStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func run(name string, args ...string) error {
	return runInput("", name, args...)
}

// runInput runs a command with input on its standard input and makes its
// output part of the error if it fails.
func runInput(input, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if input != "" {
		cmd.Stdin = strings.NewReader(input)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("netns: %s not installed: %w", name, err)
		}
		return fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "), err,
			bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
