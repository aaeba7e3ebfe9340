// Package watch counts, passively and per server port, the connections
// whose last word a server destroyed: connections the server reset after
// its last bytes while the peer was still sending, split by what those
// bytes were (a TLS alert, other data, nothing). It reads the host's own
// traffic through a packet socket whose classic BPF filter lets only the
// segments the verdict needs reach user space. Linux only; elsewhere Start
// returns ErrUnsupported.
//
// The verdict, per connection, from the server's side (the end that sent
// the SYN-ACK, on this host):
//
//   - The server sent an RST: the lost last word. A close() with unread
//     data sends one at once (TcpExtTCPAbortOnClose) and throws away what
//     the kernel had not sent; so does a close with SO_LINGER 0. After
//     the server's own FIN, an RST answers data that arrived after the
//     close (TCPAbortOnData): the last word left before the FIN and may
//     have been delivered, but the peer, still sending, gets a reset; it
//     is counted, and also in LostAfterFIN.
//   - The split: the server's last bytes, from the sequence numbers of
//     its SYN-ACK and of its FIN or RST, were a segment of alert-shaped
//     TLS records (LostAlert), other data (LostData), or nothing at all
//     (LostNone). Only alert-shaped segments pass the filter, so a large
//     response costs nothing; its sequence numbers still say data went.
//   - The peer reset first: PeerReset, not a lost last word.
//   - Two FINs and no RST: clean, no verdict.
//
// Each event counts once per connection, so retransmitted FINs, the
// resets the kernel repeats for every segment that reaches a socket that
// is gone, and a packet seen on two devices count once.
package watch

import "errors"

// Config says what to watch.
type Config struct {
	// Interface is the device to watch; "" or "any" means every device of
	// the calling thread's network namespace.
	Interface string
	// Ports are the local server ports to watch; none means every port
	// this host answers a SYN on.
	Ports []uint16
	// MaxFlows bounds the flow table; 0 means DefaultMaxFlows.
	MaxFlows int
	// OnVerdict, if not nil, is called with every verdict, from the
	// watcher's reading goroutine; it must not block.
	OnVerdict func(Verdict)
}

// A Snapshot is what a Watcher has counted since it started.
type Snapshot struct {
	// Ports holds each server port's counts.
	Ports map[uint16]Counts
	// Packets counts the packets the filter passed and the watcher read.
	Packets uint64
	// Drops counts the packets the kernel dropped because the socket's
	// buffer was full (PACKET_STATISTICS): counts may then be too low.
	Drops uint64
	// Flows is how many connections the flow table holds; Evicted how
	// many open ones a full table pushed out, whose end goes uncounted.
	Flows   int
	Evicted uint64
}

// ErrUnsupported is returned by Start where packet sockets do not exist.
var ErrUnsupported = errors.New("watch: needs Linux (AF_PACKET sockets)")

// ErrPermission is returned (wrapped) by Start when the process may not
// open a packet socket: it needs root or CAP_NET_RAW.
var ErrPermission = errors.New("watch: a packet socket needs root or CAP_NET_RAW")

// ErrNoInterface is returned (wrapped) by Start for a device that does not
// exist.
var ErrNoInterface = errors.New("watch: no such network interface")
