package watch

import "net/netip"

// Kind is how a watched connection ended, as far as its last word goes.
type Kind string

const (
	// LostAlert: the server reset the connection after its last record,
	// which looked like a TLS alert.
	LostAlert Kind = "lost_alert"
	// LostData: the server reset the connection after sending other data
	// (an HTTP response, say) last.
	LostData Kind = "lost_data"
	// LostNone: the server reset the connection without having sent any
	// data on it.
	LostNone Kind = "lost_none"
	// PeerReset: the peer, not the server, reset the connection first.
	PeerReset Kind = "peer_reset"
	// ClosingReset: the server reset the connection, but the peer was
	// not still sending: its last bytes were an alert-shaped record (a
	// close_notify), so it had ended its side itself. A client that
	// closes TLS after reading the response of a "Connection: close"
	// exchange draws an RST from a server that has already closed its
	// socket, or from one that closes without reading that
	// close_notify. Not a lost last word.
	ClosingReset Kind = "closing_reset"
)

// A Verdict is what the watcher concluded about one connection whose
// server or peer reset it. Connections that end with two FINs give none.
type Verdict struct {
	Server, Peer netip.AddrPort
	Kind         Kind
	// AfterFIN reports that the server's reset came after its own FIN:
	// data arrived after the server had closed (TCPAbortOnData), or it
	// shut down writing and then closed with unread data. The last word
	// left before the FIN and may have been delivered; the peer, still
	// sending, gets the reset all the same.
	AfterFIN bool
	// ServerClosed reports that the server's FIN or RST came before
	// anything of the kind from the peer.
	ServerClosed bool
	// Sent is how many bytes the server had sent before its FIN or RST.
	Sent uint32
}

// Lost reports whether v is a lost last word: the server reset the
// connection.
func (v Verdict) Lost() bool { return v.Kind != PeerReset && v.Kind != ClosingReset }

// Counts are one server port's counters since the watch began.
type Counts struct {
	// Opened counts connections seen from their start (the server's
	// SYN-ACK).
	Opened uint64 `json:"opened"`
	// ServerClosed counts connections whose server sent its FIN or RST
	// before the peer did.
	ServerClosed uint64 `json:"server_closed"`
	// Lost counts connections the server reset (the lost last word),
	// LostAlert, LostData and LostNone split them by the server's last
	// bytes, and LostAfterFIN counts those of them whose reset came after
	// the server's FIN.
	Lost         uint64 `json:"lost"`
	LostAlert    uint64 `json:"lost_alert"`
	LostData     uint64 `json:"lost_data"`
	LostNone     uint64 `json:"lost_none"`
	LostAfterFIN uint64 `json:"lost_after_fin"`
	// PeerResets counts connections the peer reset first.
	PeerResets uint64 `json:"peer_resets"`
	// ClosingResets counts resets the server sent after the peer had
	// everything and was closing (ClosingReset): not lost.
	ClosingResets uint64 `json:"closing_resets"`
	// Untracked counts resets the server sent on connections not seen
	// from their start: opened before the watch began, pushed out of a
	// full flow table, or answers to segments for a connection that no
	// longer exists.
	Untracked uint64 `json:"untracked_resets"`
}

// Sub returns c - old, counter by counter.
func (c Counts) Sub(old Counts) Counts {
	return Counts{
		Opened: c.Opened - old.Opened, ServerClosed: c.ServerClosed - old.ServerClosed,
		Lost: c.Lost - old.Lost, LostAlert: c.LostAlert - old.LostAlert, LostData: c.LostData - old.LostData,
		LostNone: c.LostNone - old.LostNone, LostAfterFIN: c.LostAfterFIN - old.LostAfterFIN,
		PeerResets: c.PeerResets - old.PeerResets, ClosingResets: c.ClosingResets - old.ClosingResets,
		Untracked: c.Untracked - old.Untracked,
	}
}

// Add returns c + o, counter by counter.
func (c Counts) Add(o Counts) Counts {
	return Counts{
		Opened: c.Opened + o.Opened, ServerClosed: c.ServerClosed + o.ServerClosed,
		Lost: c.Lost + o.Lost, LostAlert: c.LostAlert + o.LostAlert, LostData: c.LostData + o.LostData,
		LostNone: c.LostNone + o.LostNone, LostAfterFIN: c.LostAfterFIN + o.LostAfterFIN,
		PeerResets: c.PeerResets + o.PeerResets, ClosingResets: c.ClosingResets + o.ClosingResets,
		Untracked: c.Untracked + o.Untracked,
	}
}

// flow is what the tracker remembers of one connection.
type flow struct {
	key flowKey
	// iss is the server's initial sequence number, from its SYN-ACK.
	iss uint32
	// alertEnd is the sequence number just past the latest segment that
	// was nothing but alert-shaped records, when hasAlert.
	alertEnd uint32
	// finSeq is the sequence number of the server's FIN, when serverFIN.
	finSeq uint32
	// peerAlertEnd is the sequence number just past the peer's latest
	// alert-shaped segment, when peerAlert.
	peerAlertEnd uint32

	hasAlert, serverFIN, peerFIN, serverClosed, peerAlert bool
	// reset: the connection was reset, and its verdict given; later
	// resets on it (the kernel answers every segment for a socket that
	// is gone) are not counted again.
	reset bool
	// LRU links, indices into the flow table.
	prev, next int32
}

// A Tracker turns segments into per-port counts and verdicts. It is not
// safe for concurrent use: one goroutine feeds it.
type Tracker struct {
	flows *flowTable
	// ports is the set of server ports to watch; empty means every port
	// this host answers a SYN on.
	ports map[uint16]bool
	// servers is every port a flow was opened on: without a port set,
	// the ports whose untracked resets count.
	servers map[uint16]bool
	counts  map[uint16]*Counts
	// evicted counts open flows pushed out of the full table.
	evicted   uint64
	onVerdict func(Verdict)
}

// DefaultMaxFlows is the flow table's default capacity.
const DefaultMaxFlows = 1 << 16

// NewTracker returns a tracker for the given server ports (none: every
// local port that accepts connections) holding at most maxFlows
// connections (0: DefaultMaxFlows). onVerdict, if not nil, is called for
// every verdict.
func NewTracker(ports []uint16, maxFlows int, onVerdict func(Verdict)) *Tracker {
	if maxFlows <= 0 {
		maxFlows = DefaultMaxFlows
	}
	t := &Tracker{flows: newFlowTable(maxFlows), ports: map[uint16]bool{}, servers: map[uint16]bool{},
		counts: map[uint16]*Counts{}, onVerdict: onVerdict}
	for _, p := range ports {
		t.ports[p] = true
		t.count(p)
	}
	return t
}

func (t *Tracker) count(port uint16) *Counts {
	c := t.counts[port]
	if c == nil {
		c = &Counts{}
		t.counts[port] = c
	}
	return c
}

func (t *Tracker) watched(port uint16) bool {
	if len(t.ports) > 0 {
		return t.ports[port]
	}
	return t.servers[port]
}

// Add takes one segment. A segment can be seen more than once (a
// retransmission, a packet seen on two devices); every step below takes
// each event once per connection.
func (t *Tracker) Add(s Segment) {
	if s.Flags&(flagSYN|flagACK) == flagSYN|flagACK {
		t.open(s)
		return
	}
	if f := t.flows.get(flowKey{s.Src, s.Dst}); f != nil {
		t.fromServer(f, s)
		return
	}
	if f := t.flows.get(flowKey{s.Dst, s.Src}); f != nil {
		t.fromPeer(f, s)
		return
	}
	if s.Flags&flagRST != 0 && s.Outgoing && t.watched(s.Src.Port()) {
		t.count(s.Src.Port()).Untracked++
	}
}

// open starts a flow at the server's SYN-ACK. Only a SYN-ACK this host
// sends makes a server of it: a connection this host opened to another
// is not watched.
func (t *Tracker) open(s Segment) {
	port := s.Src.Port()
	if !s.Outgoing || len(t.ports) > 0 && !t.ports[port] {
		return
	}
	key := flowKey{s.Src, s.Dst}
	f := t.flows.get(key)
	if f != nil && f.iss == s.Seq && !f.reset && !f.serverFIN {
		return // a retransmitted SYN-ACK
	}
	if f == nil {
		var old flow
		var evicted bool
		f, old, evicted = t.flows.insert(key)
		if evicted && !old.reset && !(old.serverFIN && old.peerFIN) {
			t.evicted++
		}
	} else {
		// The same two ends again: the old connection is over.
		*f = flow{key: key, prev: f.prev, next: f.next}
	}
	f.iss = s.Seq
	t.servers[port] = true
	t.count(port).Opened++
}

func (t *Tracker) fromServer(f *flow, s Segment) {
	if f.reset {
		return
	}
	end := s.Seq + uint32(s.PayloadLen)
	if s.PayloadLen > 0 {
		switch {
		case alertRecords(s.Payload) && len(s.Payload) == s.PayloadLen:
			if !f.hasAlert || int32(end-f.alertEnd) >= 0 {
				f.alertEnd, f.hasAlert = end, true
			}
		case f.hasAlert && int32(end-f.alertEnd) > 0:
			f.hasAlert = false // data after the alert
		}
	}
	c := t.count(f.key.server.Port())
	if s.Flags&(flagFIN|flagRST) != 0 && !f.serverFIN && !f.peerFIN && !f.serverClosed {
		f.serverClosed = true
		c.ServerClosed++
	}
	if s.Flags&flagFIN != 0 && !f.serverFIN {
		f.serverFIN, f.finSeq = true, end
	}
	if s.Flags&flagRST == 0 {
		return
	}
	f.reset = true
	v := Verdict{Server: f.key.server, Peer: f.key.peer, AfterFIN: f.serverFIN, ServerClosed: f.serverClosed}
	// The reset's own sequence number is where the server's bytes ended
	// (an abort on close sends it at snd_nxt); after a FIN the FIN says
	// it, since a reset from a socket that is gone takes the peer's
	// acknowledgement number instead.
	if f.serverFIN {
		end = f.finSeq
	} else {
		end = s.Seq
	}
	v.Sent = end - (f.iss + 1)
	switch {
	case f.peerAlert && peerDone(f, s):
		v.Kind = ClosingReset
		c.ClosingResets++
		if t.onVerdict != nil {
			t.onVerdict(v)
		}
		return
	case f.hasAlert && f.alertEnd == end:
		v.Kind = LostAlert
		c.LostAlert++
	case v.Sent != 0:
		v.Kind = LostData
		c.LostData++
	default:
		v.Kind = LostNone
		c.LostNone++
	}
	c.Lost++
	if v.AfterFIN {
		c.LostAfterFIN++
	}
	if t.onVerdict != nil {
		t.onVerdict(v)
	}
}

// peerDone reports whether the server's reset rst came when the peer's
// alert-shaped record was the last the peer sent. An abort on close acks
// what the server's kernel had received (rcv_nxt), so its ACK says
// whether the peer sent more after the alert (its FIN counts one); a reset
// from a socket that is gone carries no ACK, and then the alert is taken
// as the peer's last word, a guess documented with the heuristic.
func peerDone(f *flow, rst Segment) bool {
	if rst.Flags&flagACK == 0 {
		return true
	}
	d := rst.Ack - f.peerAlertEnd
	return d == 0 || d == 1 && f.peerFIN
}

func (t *Tracker) fromPeer(f *flow, s Segment) {
	if f.reset {
		return
	}
	if s.Flags&flagFIN != 0 {
		f.peerFIN = true
	}
	if s.PayloadLen > 0 && s.Flags&flagACK != 0 && alertRecords(s.Payload) && len(s.Payload) == s.PayloadLen {
		f.peerAlert, f.peerAlertEnd = true, s.Seq+uint32(s.PayloadLen)
	}
	if s.Flags&flagRST == 0 {
		return
	}
	f.reset = true
	c := t.count(f.key.server.Port())
	c.PeerResets++
	if t.onVerdict != nil {
		v := Verdict{Server: f.key.server, Peer: f.key.peer, Kind: PeerReset, AfterFIN: f.serverFIN, ServerClosed: f.serverClosed}
		if f.serverFIN {
			v.Sent = f.finSeq - (f.iss + 1)
		}
		t.onVerdict(v)
	}
}

// Counts returns a copy of every port's counts.
func (t *Tracker) Counts() map[uint16]Counts {
	m := make(map[uint16]Counts, len(t.counts))
	for p, c := range t.counts {
		m[p] = *c
	}
	return m
}

// Flows returns how many connections the table holds, and how many open
// ones a full table pushed out.
func (t *Tracker) Flows() (held int, evicted uint64) { return t.flows.len(), t.evicted }
