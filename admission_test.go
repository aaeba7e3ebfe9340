package linger

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
)

// The admission bookkeeping (the age list, the per-peer lists, the caps)
// checked against a reference model: a driver hands off real loopback
// connections, each under a peer address of its choosing (IPv4, IPv6 in a
// few /64s, IPv4-mapped IPv6), some of them peers already past their byte
// budget, lets peers close or reset, and shuts the Closer down, and after
// every step compares the Closer with a plain slice of what should be
// lingering.

// admissionPeers are the addresses the driver hands connections off as.
// The addresses are only labels for the bookkeeping; the sockets are real
// loopback connections.
var admissionPeers = []netip.Addr{
	netip.MustParseAddr("192.0.2.1"),
	netip.MustParseAddr("192.0.2.2"),
	netip.MustParseAddr("::ffff:192.0.2.1"), // the same peer as 192.0.2.1
	netip.MustParseAddr("2001:db8::1"),
	netip.MustParseAddr("2001:db8::2"),        // same /64 as 2001:db8::1
	netip.MustParseAddr("2001:db8:0:1::1"),    // another /64, same /48
	netip.MustParseAddr("2001:db8:ffff:1::1"), // another /48
	netip.MustParseAddr("::ffff:192.0.2.77"),  // an IPv4 peer seen on a dual-stack listener
	netip.MustParseAddr("2001:db8::ffff:1:2"), // same /64 as 2001:db8::1
	netip.MustParseAddr("198.51.100.200"),
}

type modelConn struct {
	id  int
	key netip.Prefix
	srv *net.TCPConn
	cli *net.TCPConn
}

// admissionDriver runs one sequence of operations against a Closer and the
// model.
type admissionDriver struct {
	t        testing.TB
	c        *Closer
	cfg      Config // with defaults applied
	portable bool
	ln       *net.TCPListener
	reports  chan Report

	// The model.
	lingering []*modelConn // oldest first
	conns     []*modelConn // every connection handed off, by id
	handoffs  int
	// shardsUsed is the most event-loop shards seen holding sockets at
	// once.
	shardsUsed int
	released   map[int]Outcome // id -> how it ended
	plains     int             // connections closed plainly (no id)
	down       bool
}

const (
	opHandoff = iota
	opPeerCloses
	opPeerResets
	opNotTCP
	opCloseTwice
	opShutdown
	opPastBudget
	numOps
)

// pastBudgetBytes is what a peer of opPastBudget sends before its
// hand-off: more than the model's MaxDiscard, and so more than its
// PressureDiscard too.
const pastBudgetBytes = 48 << 10

// runAdmission decodes ops from data and runs them; cfg's caps come from
// its first bytes. The event loop gets shards shards, whatever GOMAXPROCS
// is. It returns the most shards seen holding sockets at once.
func runAdmission(t testing.TB, portable bool, shards int, data []byte) int {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	cfg := Config{
		IdleTimeout:   time.Hour, // only the driver ends connections
		MaxHold:       time.Hour,
		MaxConns:      1 + int(next()%6),
		MaxConnsPerIP: int(next()%4) - 1, // -1: off; 0: the default, above MaxConns
		IPv6PrefixLen: []int{0, 48, 64, 128}[next()%4],
		// Below what a loopback socket queues before it is read, so that
		// opPastBudget's peers can pass either budget before the hand-off.
		MaxDiscard:      32 << 10,
		PressureDiscard: 8 << 10,
	}
	d := &admissionDriver{
		t:        t,
		portable: portable,
		reports:  make(chan Report, 4096),
		released: make(map[int]Outcome),
	}
	cfg.OnClose = func(r Report) { d.reports <- r }
	c, err := newCloser(cfg, portable)
	if err != nil {
		t.Fatal(err)
	}
	setShards(c, shards)
	d.c, d.cfg = c, c.cfg
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d.ln = ln
	fds := proc.OpenFDs()
	defer func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		c.Shutdown(ctx)
		for _, m := range d.conns {
			if m.cli != nil {
				m.cli.Close()
			}
		}
		ln.Close()
		testbed.WaitFDs(t, fds)
	}()

	for step := 0; len(data) > 0 && step < 48 && !t.Failed(); step++ {
		op := next() % numOps
		arg := int(next())
		desc := d.do(op, arg)
		d.check(fmt.Sprintf("step %d (%s)", step, desc))
	}
	t.Logf("MaxConns %d, MaxConnsPerIP %d, IPv6PrefixLen %d: %d hand-offs, %d released, %d plain, %d lingering at the end, at most %d shards in use",
		d.cfg.MaxConns, d.cfg.MaxConnsPerIP, d.cfg.IPv6PrefixLen, d.handoffs, len(d.released), d.plains, len(d.lingering), d.shardsUsed)
	return d.shardsUsed
}

func (d *admissionDriver) key(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = d.cfg.IPv6PrefixLen
	}
	p, _ := a.Prefix(bits)
	return p
}

func (d *admissionDriver) pair() (srv, cli *net.TCPConn) {
	c, err := net.DialTCP("tcp", nil, d.ln.Addr().(*net.TCPAddr))
	if err != nil {
		d.t.Fatal(err)
	}
	s, err := d.ln.AcceptTCP()
	if err != nil {
		c.Close()
		d.t.Fatal(err)
	}
	return s, c
}

// handOff makes a connection from peer, has the peer send sent bytes
// first (waiting until they are all unread on the server's side), and
// closes it through the Closer. done says that the Closer was shut down,
// so the model expects a plain close and nothing more is to be done.
func (d *admissionDriver) handOff(peer netip.Addr, sent int) (m *modelConn, done bool) {
	t := d.t
	srv, cli := d.pair()
	m = &modelConn{id: len(d.conns), key: d.key(peer), srv: srv, cli: cli}
	d.conns = append(d.conns, m)
	d.handoffs++
	if sent > 0 {
		if _, err := cli.Write(make([]byte, sent)); err != nil {
			t.Fatal(err)
		}
		waitUnread(t, srv, sent)
	}
	// The port tells the reports apart.
	addr := netip.AddrPortFrom(peer, uint16(10000+m.id))
	if err := d.c.closeFrom(srv, srv, addr); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if d.down {
		d.plains++
		d.expectPlain(ErrShutdown)
		return m, true
	}
	return m, false
}

// do runs one operation on the Closer and the model, and checks the
// reports it caused.
func (d *admissionDriver) do(op byte, arg int) string {
	t := d.t
	switch op {
	case opHandoff:
		peer := admissionPeers[arg%len(admissionPeers)]
		m, done := d.handOff(peer, 0)
		if done {
			return "hand-off after shutdown"
		}
		want := d.admit(m)
		d.expect(want, Released)
		return fmt.Sprintf("hand-off %d from %v, releasing %v", m.id, peer, want)

	case opPastBudget:
		peer := admissionPeers[arg%len(admissionPeers)]
		m, done := d.handOff(peer, pastBudgetBytes)
		if done {
			return "hand-off past its budget after shutdown"
		}
		if !d.portable {
			// The event loop ends it within Close, unadmitted: it takes
			// no one's place. Under pressure SIOCINQ finds it before
			// anything is read; otherwise Close reads one byte more than
			// MaxDiscard. Never the pressure budget's worth.
			select {
			case r := <-d.reports:
				if id := d.idOf(r); id != m.id {
					t.Errorf("report for %d, want %d", id, m.id)
				}
				d.record(r, Budget)
				if r.Discarded != 0 && r.Discarded != d.cfg.MaxDiscard+1 {
					t.Errorf("connection %d: discarded %d, want 0 (under pressure) or %d", m.id, r.Discarded, d.cfg.MaxDiscard+1)
				}
			default:
				t.Errorf("no report for %d when Close returned", m.id)
			}
			d.expect(nil, 0)
			return fmt.Sprintf("hand-off %d from %v past its budget, ended in Close", m.id, peer)
		}
		// The portable backend admits it, making room as for any other,
		// and its goroutine then reads it to its budget, maybe before
		// Close has returned: its report may come before those of the
		// connections released for it, which Close delivers in order
		// after the Closer's lock, as the goroutine does its own.
		want := d.admit(m)
		d.lingering = slices.DeleteFunc(d.lingering, func(o *modelConn) bool { return o == m })
		var got []int
		for ended := false; !ended || len(got) < len(want); {
			var r Report
			select {
			case r = <-d.reports:
			case <-time.After(10 * time.Second):
				t.Fatalf("reports for %d and the %v released for it: none more within 10s", m.id, want)
			}
			if id := d.idOf(r); id == m.id {
				d.record(r, Budget)
				ended = true
			} else {
				d.record(r, Released)
				got = append(got, id)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("released %v, want %v (oldest first)", got, want)
		}
		return fmt.Sprintf("hand-off %d from %v past its budget, releasing %v, then budget", m.id, peer, want)

	case opPeerCloses, opPeerResets:
		if len(d.lingering) == 0 {
			return "no peer to close"
		}
		m := d.lingering[arg%len(d.lingering)]
		want := PeerClosed
		if op == opPeerResets {
			want = PeerReset
			m.cli.SetLinger(0)
		}
		m.cli.Close()
		m.cli = nil
		d.lingering = slices.DeleteFunc(d.lingering, func(o *modelConn) bool { return o == m })
		d.wait(m.id, want)
		return fmt.Sprintf("peer of %d: %v", m.id, want)

	case opNotTCP:
		a, b := net.Pipe()
		defer b.Close()
		d.handoffs++
		d.plains++
		if err := d.c.Close(pipeConn{a}); err != nil {
			t.Fatalf("Close of a pipe = %v", err)
		}
		d.expectPlain(ErrNotTCP)
		return "not TCP"

	case opCloseTwice:
		if len(d.lingering) == 0 {
			return "nothing to close twice"
		}
		m := d.lingering[arg%len(d.lingering)]
		if err := d.c.Close(m.srv); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close of %d = %v, want net.ErrClosed", m.id, err)
		}
		d.expect(nil, 0)
		return fmt.Sprintf("close %d again", m.id)

	case opShutdown:
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := d.c.Shutdown(ctx)
		if n := len(d.lingering); n > 0 != (err != nil) {
			t.Errorf("Shutdown with %d lingering = %v", n, err)
		}
		var want []int
		for _, m := range d.lingering {
			want = append(want, m.id)
		}
		d.lingering = nil
		d.down = true
		d.expect(want, Shutdown)
		return fmt.Sprintf("shutdown, closing %v", want)
	}
	return "?"
}

// admit makes room for m under the caps, oldest first, and links it as
// lingering; it returns the connections released for it.
func (d *admissionDriver) admit(m *modelConn) []int {
	var want []int
	if d.cfg.MaxConnsPerIP > 0 {
		for d.peerCount(m.key) >= d.cfg.MaxConnsPerIP {
			want = append(want, d.evict(func(o *modelConn) bool { return o.key == m.key }))
		}
	}
	for len(d.lingering) >= d.cfg.MaxConns {
		want = append(want, d.evict(func(*modelConn) bool { return true }))
	}
	d.lingering = append(d.lingering, m)
	return want
}

func (d *admissionDriver) peerCount(k netip.Prefix) int {
	n := 0
	for _, m := range d.lingering {
		if m.key == k {
			n++
		}
	}
	return n
}

// evict removes the oldest lingering connection that match accepts.
func (d *admissionDriver) evict(match func(*modelConn) bool) int {
	i := slices.IndexFunc(d.lingering, match)
	m := d.lingering[i]
	d.lingering = slices.Delete(d.lingering, i, i+1)
	return m.id
}

// idOf returns the connection id a report's address carries.
func (d *admissionDriver) idOf(r Report) int {
	a, ok := r.RemoteAddr.(*net.TCPAddr)
	if !ok || a.Port < 10000 {
		d.t.Fatalf("report %+v carries no connection id", r)
	}
	return a.Port - 10000
}

func (d *admissionDriver) record(r Report, want Outcome) {
	id := d.idOf(r)
	if o, dup := d.released[id]; dup {
		d.t.Errorf("connection %d reported twice: %v, then %v", id, o, r.Outcome)
	}
	d.released[id] = r.Outcome
	if r.Outcome != want {
		d.t.Errorf("connection %d: %v (%v), want %v", id, r.Outcome, r.Err, want)
	}
}

// expect takes the reports an operation delivered before it returned (they
// are delivered synchronously) and compares them with want, in order.
func (d *admissionDriver) expect(want []int, o Outcome) {
	var got []int
	for {
		select {
		case r := <-d.reports:
			d.record(r, o)
			got = append(got, d.idOf(r))
			continue
		default:
		}
		break
	}
	if !slices.Equal(got, want) {
		d.t.Errorf("released %v, want %v (oldest first)", got, want)
	}
}

func (d *admissionDriver) expectPlain(why error) {
	select {
	case r := <-d.reports:
		if r.Outcome != Plain || !errors.Is(r.Err, why) {
			d.t.Errorf("report %v %v, want plain %v", r.Outcome, r.Err, why)
		}
	default:
		d.t.Errorf("no report for a plain close (%v)", why)
	}
}

// wait waits for the report of a connection whose peer acted.
func (d *admissionDriver) wait(id int, o Outcome) {
	select {
	case r := <-d.reports:
		if got := d.idOf(r); got != id {
			d.t.Errorf("report for %d, want %d", got, id)
		}
		d.record(r, o)
	case <-time.After(10 * time.Second):
		d.t.Fatalf("no report for %d within 10s", id)
	}
}

// check compares the Closer with the model.
func (d *admissionDriver) check(step string) {
	t := d.t
	st := d.c.Stats()
	if st.Lingering != len(d.lingering) {
		t.Errorf("%s: %d lingering, model %d", step, st.Lingering, len(d.lingering))
	}
	if st.Lingering > d.cfg.MaxConns {
		t.Errorf("%s: %d lingering over MaxConns %d", step, st.Lingering, d.cfg.MaxConns)
	}
	var total uint64
	for _, n := range st.Outcomes {
		total += n
	}
	if int(total)+st.Lingering != d.handoffs {
		t.Errorf("%s: %d lingering + %d closed != %d hand-offs", step, st.Lingering, total, d.handoffs)
	}
	if int(total) != len(d.released)+d.plains {
		t.Errorf("%s: Stats count %d closed, reports %d", step, total, len(d.released)+d.plains)
	}
	want := map[netip.Prefix]int{}
	if d.c.peers != nil {
		for _, m := range d.lingering {
			want[m.key]++
		}
	}
	got := map[netip.Prefix]int{}
	d.c.mu.Lock()
	for k, p := range d.c.peers {
		got[k] = p.len
		if p.len > d.cfg.MaxConnsPerIP {
			t.Errorf("%s: peer %v has %d lingering, cap %d", step, k, p.len, d.cfg.MaxConnsPerIP)
		}
	}
	var order []int
	for e := d.c.all.front; e != nil; e = e.links[byAge].next {
		order = append(order, int(e.addr.Port())-10000)
	}
	if used := checkShards(t, d.c, step); used > d.shardsUsed {
		d.shardsUsed = used
	}
	d.c.mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: per-peer counts %v, model %v", step, got, want)
	}
	var model []int
	for _, m := range d.lingering {
		model = append(model, m.id)
	}
	if !slices.Equal(order, model) {
		t.Errorf("%s: lingering %v, model %v", step, order, model)
	}
}

// TestAdmissionModel runs random operation sequences on both backends, and
// on an event loop of three shards whatever GOMAXPROCS is, so that entries
// of several shards, and descriptor numbers reused across them, are
// checked under GOMAXPROCS=1 too.
func TestAdmissionModel(t *testing.T) {
	runs := 40
	if testing.Short() {
		runs = 5
	}
	for _, be := range []struct {
		name     string
		portable bool
		shards   int
	}{
		{"loop", false, 1},
		{"loop-3-shards", false, 3},
		{"portable", true, 0},
	} {
		t.Run(be.name, func(t *testing.T) {
			used := 0
			defer func() {
				if be.shards > 1 && used < 2 && hasShards && !t.Failed() {
					t.Errorf("premise: no run had sockets in more than %d of %d shards at once", used, be.shards)
				}
			}()
			for seed := range uint64(runs) {
				r := rand.New(rand.NewPCG(seed, 9))
				data := []byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
				for range 47 {
					// Mostly hand-offs, so the caps fill; a shutdown near
					// the end, if at all.
					var op byte
					switch n := r.IntN(100); {
					case n < 54:
						op = opHandoff
					case n < 60:
						op = opPastBudget
					case n < 75:
						op = opPeerCloses
					case n < 87:
						op = opPeerResets
					case n < 93:
						op = opNotTCP
					case n < 99:
						op = opCloseTwice
					default:
						op = opShutdown
					}
					data = append(data, op, byte(r.Uint32()))
				}
				t.Run(fmt.Sprint(seed), func(t *testing.T) {
					used = max(used, runAdmission(t, be.portable, be.shards, data))
				})
			}
		})
	}
}

// FuzzAdmission drives the same model from fuzzed bytes:
//
//	go test -run '^$' -fuzz FuzzAdmission -fuzztime 60s .
//
// The first byte picks the backend (its lowest bit) and the event loop's
// shards (1 to 4, from the next two bits); the next three the caps:
// MaxConns 1 to 6, MaxConnsPerIP off, the default (256), 1 or 2, and
// IPv6PrefixLen.
func FuzzAdmission(f *testing.F) {
	// Seeds: the crashes once seen, then a mix. Each is a few operations,
	// so that plain go test runs them in well under a second.
	h, pc, pr, nt, tw, sd, pb := byte(opHandoff), byte(opPeerCloses), byte(opPeerResets), byte(opNotTCP), byte(opCloseTwice), byte(opShutdown), byte(opPastBudget)
	for _, seed := range [][]byte{
		// MaxConnsPerIP 1: two from one IP, then one closes.
		{0, 0, 2, 0, h, 0, h, 0, pc, 0, h, 0},
		// MaxConnsPerIP above MaxConns 2: .1, .2, .1.
		{1, 1, 1, 0, h, 0, h, 1, h, 0, pc, 0, pc, 0},
		// Addresses of one /64, then the first again.
		{0, 5, 2, 2, h, 3, h, 4, h, 8, h, 3, pr, 1, h, 4},
		// Mapped and plain IPv4 are one peer.
		{1, 3, 1, 0, h, 0, h, 2, h, 7, h, 1, tw, 0, pc, 1},
		{0, 2, 0, 3, h, 5, h, 6, nt, 0, h, 5, sd, 0, h, 1, pc, 0},
		// Three shards: sockets spread over them, peers close and
		// their descriptor numbers come back in another shard.
		{4, 5, 0, 0, h, 0, h, 1, h, 2, pc, 0, h, 3, pr, 1, h, 4, pc, 2, h, 5, tw, 0, sd, 0},
		// Four shards, MaxConns 3: evictions across shards.
		{6, 2, 0, 0, h, 0, h, 1, h, 2, h, 3, h, 4, pc, 1, h, 5, pr, 0},
		// MaxConns 3, MaxConnsPerIP 1: peers past their budget from a
		// lingering peer's address and at the cap, before and after the
		// pressure mark, then after shutdown; on either backend.
		{0, 2, 2, 0, pb, 0, h, 0, pb, 0, h, 1, h, 9, pb, 1, pc, 0, pb, 3, sd, 0, pb, 0},
		{1, 2, 2, 0, pb, 0, h, 0, pb, 0, h, 1, h, 9, pb, 1, pc, 0, pb, 3, sd, 0, pb, 0},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		runAdmission(t, data[0]%2 == 1, 1+int(data[0]>>1)%4, data[1:])
	})
}
