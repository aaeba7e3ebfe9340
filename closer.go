package linger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"sync"
	"time"

	"github.com/linger-go/linger/internal/backendsel"
	"github.com/linger-go/linger/internal/pressuresel"
)

// A Closer closes connections with a lingering close. Its methods are safe
// for concurrent use. A Closer holds no goroutine and no descriptor once
// nothing has lingered for a second, nor after Shutdown.
//
// The zero Closer is ready to use, with the zero Config's bounds and no
// OnClose; it takes them at its first use (any method), once, safely for
// concurrent first uses. A Closer must not be copied after its first use.
type Closer struct {
	setup sync.Once // makes a zero Closer the one New(Config{}) would return
	cfg   Config
	epoch time.Time // monotonic origin of the engine's int64 clocks
	be    backend
	wg    sync.WaitGroup // the backend's goroutines

	rcvBuf       int  // the receive buffer a lingering socket is clamped to under pressure, or 0
	rcvAlways    bool // clamp it without pressure too
	holdPressure bool // pressure lasts IdleTimeout after lingering was last at its mark
	noInq        bool // under pressure, read a peer past its budget instead of asking SIOCINQ (a benchmark's comparison)

	// mu guards the admission bookkeeping below and each entry's fields,
	// except what the Linux event loop reads while it drains (see
	// entry.draining). It is held for bookkeeping only, never across a
	// blocking call or a batch of reads, so Close and Stats never wait for
	// draining.
	mu      sync.Mutex
	down    bool                  // Shutdown was called
	drained chan struct{}         // closed when nothing lingers after Shutdown
	all     list                  // every lingering entry, oldest first
	queued  list                  // entries holding bytes of ours, oldest first
	qbytes  int64                 // the sum of their queued bytes, as last seen
	peers   map[netip.Prefix]peer // by value: nothing can hold a stale one
	evicted int64                 // when admit last released a connection to make room under MaxConns, or MaxQueued without peers (engine clock)
	pressed int64                 // when budget last saw three quarters of MaxConns lingering (engine clock)
	// peerPressed is the latest of the peers' own pressure (peer.pressed):
	// while it is older than IdleTimeout no peer is under pressure of its
	// own, and the budget needs no look-up by peer.
	peerPressed int64
	stats       counters
	reports     []Report // waiting for OnClose, delivered by unlock
	fds         []int    // descriptors to close, by unlock, once mu is released
}

// New returns a Closer with the bounds in cfg, or an error wrapping
// ErrConfig if cfg is invalid.
func New(cfg Config) (*Closer, error) {
	return newCloser(cfg, backendsel.Portable.Load())
}

func newCloser(cfg Config, portableOnly bool) (*Closer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Closer{}
	c.setup.Do(func() { c.init(cfg, portableOnly) })
	return c, nil
}

// ready makes a zero Closer usable, with the zero Config's defaults, at
// its first use; for a Closer from New it costs an atomic load.
func (c *Closer) ready() {
	c.setup.Do(func() {
		cfg, _ := Config{}.withDefaults() // the zero Config is valid
		c.init(cfg, backendsel.Portable.Load())
	})
}

// init sets up c with cfg, which has its defaults applied.
func (c *Closer) init(cfg Config, portableOnly bool) {
	c.cfg, c.epoch = cfg, time.Now()
	c.evicted, c.pressed, c.peerPressed = math.MinInt64/2, math.MinInt64/2, math.MinInt64/2
	c.holdPressure = !pressuresel.NoHold.Load()
	c.rcvAlways = pressuresel.RcvBufAlways.Load()
	c.noInq = pressuresel.NoInq.Load()
	c.rcvBuf = int(min(pressureRcvBuf, cfg.PressureDiscard))
	switch n := pressuresel.RcvBuf.Load(); {
	case n < 0:
		c.rcvBuf = 0
	case n > 0:
		c.rcvBuf = int(n)
	}
	c.all.which = byAge
	c.queued.which = byQueue
	if cfg.MaxConnsPerIP > 0 {
		c.peers = make(map[netip.Prefix]peer)
	}
	c.be = newBackend(c, portableOnly)
}

// peer is what the Closer keeps for one peer under MaxConnsPerIP.
type peer struct {
	list          // its lingering entries, oldest first
	pressed int64 // when its own cap last released one of them (engine clock)
}

// Must is like New but panics on an invalid Config. It is meant for
// package-level variables and configs written as literals.
func Must(cfg Config) *Closer {
	c, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return c
}

// now returns the engine's clock.
func (c *Closer) now() int64 { return int64(time.Since(c.epoch)) }

// ErrNilConn is returned by Close for a nil connection, or a connection
// whose underlying TCP connection is nil.
var ErrNilConn = errors.New("linger: nil connection")

// Close takes conn from its caller and returns at once. Bytes already written
// to conn still go out, followed by a FIN; anything blocked in conn's Read or
// Write returns net.ErrClosed; in the background, what the peer still sends
// is read and discarded until it closes, within the Config's bounds.
//
// conn may be a *net.TCPConn, a connection accepted through Listener, a
// *tls.Conn on either, or any connection with a NetConn method that leads to
// one. A *tls.Conn is closed without close_notify: to send one, close the
// *tls.Conn itself on a connection accepted through Listener. Anything else is
// closed plainly and counted, once for each Close that succeeds.
//
// Close returns the error of closing conn itself, such as net.ErrClosed for a
// connection closed before (which is not counted again), or ErrNilConn; it
// never fails because lingering was not possible.
//
// On Linux, a connection whose peer has already closed or reset it, with
// nothing left unread, or that Close finds past its byte budget (see
// Budget), is closed within Close as conn.Close would close it: if the
// application holds another descriptor of its socket (from File, say),
// the FIN, or the reset that unread bytes make the close send, waits
// until that one is closed too.
//
// On Windows, where a socket cannot be duplicated within a process, conn
// itself lingers: its write side is shut down at once (a goroutine blocked
// in its Write gets the error of that), but a goroutine blocked in its Read
// returns only when lingering ends.
func (c *Closer) Close(conn net.Conn) error {
	c.ready()
	tcp, err := tcpConn(conn)
	if err != nil {
		return err
	}
	if tcp == nil {
		err := conn.Close()
		if err == nil {
			c.plain(conn, ErrNotTCP)
		}
		return err
	}
	var addr netip.AddrPort
	if a, ok := tcp.RemoteAddr().(*net.TCPAddr); ok {
		addr = a.AddrPort()
	}
	return c.closeFrom(conn, tcp, addr)
}

// closeFrom is Close once conn's TCP connection and peer address are known.
func (c *Closer) closeFrom(conn net.Conn, tcp *net.TCPConn, addr netip.AddrPort) error {
	// An IPv4 peer of a dual-stack listener arrives as ::ffff:a.b.c.d.
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	c.mu.Lock()
	down, budget := c.down, c.budgetFor(c.peerKey(addr))
	c.mu.Unlock()
	if down {
		err := tcp.Close()
		if err == nil {
			c.plain(conn, ErrShutdown)
		}
		return err
	}
	err := c.be.handOff(tcp, addr, budget)
	if err == nil {
		return nil
	}
	var ended *closedError
	switch {
	case errors.Is(err, errTaken):
		// Someone else closed conn first; the socket is theirs.
		return tcp.Close()
	case errors.As(err, &ended):
		// conn is closed and the socket went with it.
		c.mu.Lock()
		c.report(Report{RemoteAddr: c.addrOf(addr), Outcome: ended.outcome, Discarded: ended.discarded, Unacked: -1, Err: ended.err})
		c.unlock()
		return nil
	}
	// Nothing was taken: conn is still open, close it plainly.
	var discarded int64
	var drained *drainedError
	if errors.As(err, &drained) {
		discarded, err = drained.n, drained.err
	}
	cerr := tcp.Close()
	if cerr == nil {
		c.plainDiscarded(conn, err, discarded)
	}
	return cerr
}

// addrOf is a as a Report's RemoteAddr, or nil if no OnClose will read
// it: the conversion costs an allocation.
func (c *Closer) addrOf(a netip.AddrPort) net.Addr {
	if c.cfg.OnClose == nil {
		return nil
	}
	return tcpAddr(a)
}

// plain counts a connection closed without lingering.
func (c *Closer) plain(conn net.Conn, why error) { c.plainDiscarded(conn, why, 0) }

// plainDiscarded is plain for a connection of which n bytes the peer sent
// were already read and discarded.
func (c *Closer) plainDiscarded(conn net.Conn, why error, n int64) {
	r := Report{Outcome: Plain, Discarded: n, Unacked: -1, Err: why}
	if c.cfg.OnClose != nil {
		r.RemoteAddr = remoteAddr(conn)
	}
	c.mu.Lock()
	c.report(r)
	c.unlock()
}

func remoteAddr(conn net.Conn) (a net.Addr) {
	defer func() {
		// A connection that was never connected may panic here; the address
		// is only evidence.
		if recover() != nil {
			a = nil
		}
	}()
	return conn.RemoteAddr()
}

// peerKey is what MaxConnsPerIP counts by: an IPv4 address, or an IPv6
// address's prefix of Config.IPv6PrefixLen bits, since one IPv6 host
// usually holds a whole /64.
func (c *Closer) peerKey(a netip.AddrPort) netip.Prefix {
	ip := a.Addr()
	bits := 32
	if ip.Is6() {
		bits = c.cfg.IPv6PrefixLen
	}
	p, _ := ip.Prefix(bits) // an invalid address gives the zero Prefix: one shared key
	return p
}

// admit links e, a socket detached from peer addr with queued bytes of ours
// not yet acknowledged, as lingering from now, first making room under the
// caps by releasing the longest-lingering connections; c.mu must be held.
// It returns an error, and links nothing, after Shutdown (ErrShutdown) or
// when only peers making progress hold the queued bytes MaxQueued bounds
// (ErrMaxQueued): the caller then closes the socket plainly and reports
// it with plainRefused.
func (c *Closer) admit(e *entry, addr netip.AddrPort, queued int64) error {
	if c.down {
		return ErrShutdown
	}
	// Each stop releases at once, so each loop ends. Each release may
	// change or delete the peer's list, so it is looked up every time.
	//
	// MaxQueued goes first: if it refuses e, no one else was released
	// for nothing.
	now := c.now()
	shared := false // a release that puts everyone under pressure
	for queued > 0 && c.qbytes+queued > c.cfg.MaxQueued && c.queued.front != nil {
		v := c.stalledQueued(now)
		if v == nil {
			return ErrMaxQueued
		}
		// The peer whose connection took nothing is the one to press:
		// with peers counted, the pressure is its own, as under its
		// cap; without, everyone's.
		vk := c.peerKey(v.addr)
		c.be.stop(v, Released, ErrMaxQueued)
		switch _, lingers := c.peers[vk]; {
		case c.peers == nil:
			shared = true
		case lingers:
			c.pressPeer(vk, now)
		}
	}
	var key netip.Prefix
	if c.peers != nil {
		key = c.peerKey(addr)
		own := false
		for c.peers[key].len >= c.cfg.MaxConnsPerIP {
			c.be.stop(c.peers[key].front, Released, nil)
			own = true
		}
		if own {
			// Only this peer is under pressure for it: its cap is what
			// keeps it from taking the others' lingering, and a release
			// under it says nothing about anyone else.
			c.pressPeer(key, now)
		}
	}
	for c.all.len >= c.cfg.MaxConns {
		c.be.stop(c.all.front, Released, nil)
		shared = true
	}
	if shared {
		c.evicted = now
	}
	e.addr = addr
	e.start = now
	c.all.push(e)
	if c.peers != nil {
		// A peer with nothing lingering has no entry, and its pressure,
		// if any, went with its last connection, except when this
		// hand-off's own release emptied it (pressPeer).
		p, ok := c.peers[key]
		if !ok {
			p.pressed = math.MinInt64 / 2 // never
		}
		p.which = byPeer
		p.push(e)
		c.peers[key] = p
	}
	c.setQueued(e, queued)
	return nil
}

// pressPeer puts peer key under pressure of its own from now, for
// IdleTimeout; c.mu must be held. It makes an entry for a peer with
// nothing lingering, which only a hand-off about to add one may ask for:
// release deletes a peer's entry only when it removes its last
// connection.
func (c *Closer) pressPeer(key netip.Prefix, now int64) {
	p := c.peers[key]
	p.which = byPeer
	p.pressed = now
	c.peers[key] = p
	c.peerPressed = now
}

// plainRefused reports a socket that admit refused with err; c.mu must be
// held.
func (c *Closer) plainRefused(addr netip.AddrPort, err error) {
	c.report(Report{RemoteAddr: c.addrOf(addr), Outcome: Plain, Unacked: -1, Err: err})
}

// maxStallChecks bounds the SIOCOUTQ readings one hand-off may make under
// Closer.mu to find a stalled connection (stalledQueued); the walk past
// connections known to make progress is bounded by maxStallWalk.
const (
	maxStallChecks = 8
	maxStallWalk   = 64
)

// stalledQueued returns the longest-lingering connection that holds queued
// bytes of ours and whose peer has acknowledged none of them since the
// hand-off, having had IdleTimeout to, or nil if it finds none within its
// bounds; c.mu must be held.
//
// Why not simply the longest-lingering, as the other caps take: a slow
// reader of a large response holds more bytes for longer than anyone, so
// an attacker opening zero-window connections would have it reset every
// time, after it had taken a good part of the response; a plain close
// would have let the kernel send all of it. Why "ever since the hand-off"
// and not "lately": a slow reader whose application reads less than the
// network brings fills its receive buffer and shows a zero window itself,
// for as long as its buffer takes to drain by half (Linux reopens a closed
// window only then), which for a large buffer is seconds; between those
// stretches it acknowledges a window at a time. Only a peer that has
// taken nothing at all looks like the attacker MaxQueued is for. One that
// reads a byte to be spared holds its queue until MaxHold, and new
// connections meanwhile get a plain close, no worse than without linger.
func (c *Closer) stalledQueued(now int64) *entry {
	checks := 0
	walked := 0
	for e := c.queued.front; e != nil && walked < maxStallWalk; e = e.links[byQueue].next {
		walked++
		switch {
		case now-e.start < int64(c.cfg.IdleTimeout):
			// Younger ones follow it: the list is by age.
			return nil
		case e.flags&progressed != 0:
			continue
		case checks == maxStallChecks:
			return nil
		}
		checks++
		if c.be.stalled(e) {
			return e
		}
		e.flags |= progressed
	}
	return nil
}

// hard is when e reaches MaxHold.
func (c *Closer) hard(e *entry) int64 { return e.start + int64(c.cfg.MaxHold) }

// budget is the byte budget of every lingering connection now: MaxDiscard,
// or PressureDiscard while lingering is under pressure (see
// Config.PressureDiscard); c.mu must be held.
//
// Pressure lasts IdleTimeout after lingering was last seen at its mark,
// as after an eviction. Without that, a flood whose connections the
// pressure budget ends quickly, or at hand-off before they are admitted,
// brings lingering back below the mark at once, and the next connections
// get MaxDiscard until they pile up again. A connection that Close finds
// past the pressure budget renews the pressure too (renewPressure): it
// never lingers, so it would never hold lingering at the mark.
func (c *Closer) budget() int64 {
	now := c.now()
	if c.all.len >= c.cfg.MaxConns-c.cfg.MaxConns/4 {
		if !c.holdPressure {
			return c.cfg.PressureDiscard
		}
		c.pressed = now
	}
	if now-max(c.evicted, c.pressed) < int64(c.cfg.IdleTimeout) {
		return c.cfg.PressureDiscard
	}
	return c.cfg.MaxDiscard
}

// budgetFor is budget for a connection of peer key: also the pressure
// budget while that peer is under pressure of its own, from a release
// under its MaxConnsPerIP within the last IdleTimeout; c.mu must be held.
func (c *Closer) budgetFor(key netip.Prefix) int64 {
	b := c.budget()
	if c.pressured(b) || !c.peerPressure(key) {
		return b
	}
	return c.cfg.PressureDiscard
}

// peerPressure says whether peer key is under pressure of its own; c.mu
// must be held.
func (c *Closer) peerPressure(key netip.Prefix) bool {
	idle := int64(c.cfg.IdleTimeout)
	now := c.now()
	if now-c.peerPressed >= idle {
		return false
	}
	p, ok := c.peers[key]
	return ok && now-p.pressed < idle
}

// renewPressure counts a connection of peer key ended at hand-off for its
// pressure budget as lingering seen at the pressure mark now, or, if the
// pressure was that peer's own, as a release under its cap; c.mu must be
// held.
func (c *Closer) renewPressure(key netip.Prefix) {
	if !c.holdPressure {
		return
	}
	now := c.now()
	if !c.pressured(c.budget()) && c.peerPressure(key) {
		p := c.peers[key]
		p.pressed = now
		c.peers[key] = p
		c.peerPressed = now
		return
	}
	c.pressed = now
}

// pressured says whether budget, from c.budget, is the pressure budget:
// only pressure lowers it below MaxDiscard.
func (c *Closer) pressured(budget int64) bool { return budget < c.cfg.MaxDiscard }

// clampFor is the receive buffer size a lingering socket should be clamped
// to while the byte budget is budget: c.rcvBuf under pressure, 0 (leave
// it) otherwise.
func (c *Closer) clampFor(budget int64) int {
	if c.pressured(budget) || c.rcvAlways {
		return c.rcvBuf
	}
	return 0
}

// setQueued records that e holds q bytes of ours not yet acknowledged; c.mu
// must be held. Entries holding none are not on the queued list.
func (c *Closer) setQueued(e *entry, q int64) {
	q = max(q, 0)
	switch {
	case e.queued > 0 && q == 0:
		c.queued.remove(e)
	case e.queued == 0 && q > 0:
		c.queued.push(e)
	}
	c.qbytes += q - int64(e.queued)
	e.queued = int32(min(q, math.MaxInt32))
}

// release unlinks e and records how it ended. Backends call it, with c.mu
// held, exactly once per entry.
func (c *Closer) release(e *entry, o Outcome, unacked int64, err error) {
	e.released = true
	c.all.remove(e)
	if c.peers != nil {
		key := c.peerKey(e.addr)
		p := c.peers[key]
		p.remove(e)
		if p.len == 0 {
			delete(c.peers, key)
		} else {
			c.peers[key] = p
		}
	}
	c.setQueued(e, 0)
	r := Report{
		Outcome:   o,
		Held:      time.Duration(c.now() - e.start),
		Discarded: e.discarded,
		Unacked:   unacked,
		Err:       err,
	}
	r.RemoteAddr = c.addrOf(e.addr)
	c.report(r)
	if c.all.len == 0 && c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
}

func tcpAddr(a netip.AddrPort) net.Addr {
	if !a.IsValid() {
		return nil
	}
	return net.TCPAddrFromAddrPort(a)
}

// report counts r and queues it for OnClose; c.mu must be held.
func (c *Closer) report(r Report) {
	c.stats.add(&r)
	if c.cfg.OnClose != nil {
		c.reports = append(c.reports, r)
	}
}

// unlock releases c.mu, then closes the descriptors and delivers the
// reports queued under it, so that neither close(2) nor OnClose runs with
// the lock held.
func (c *Closer) unlock() {
	rs, fds := c.reports, c.fds
	c.reports, c.fds = nil, nil
	c.mu.Unlock()
	for _, fd := range fds {
		closeFD(fd)
	}
	if len(rs) > 0 {
		c.deliver(rs)
	}
}

// deliver calls OnClose with each of rs. Shutdown looks for this function
// on its caller's stack (inOnClose), so it must keep its own frame.
//
//go:noinline
func (c *Closer) deliver(rs []Report) {
	for _, r := range rs {
		c.cfg.OnClose(r)
	}
}

// deliverName is deliver's name as the runtime reports it in a stack.
var deliverName = runtime.FuncForPC(reflect.ValueOf((*Closer).deliver).Pointer()).Name()

// inOnClose says whether the calling goroutine is running an OnClose, of
// any Closer: the goroutine may then be one that a Closer needs in order
// to finish (an event loop's, or a connection's on the portable backend),
// and Shutdown must not wait for it. Go has no goroutine identity to ask,
// but the goroutine's own stack says it; reading it costs microseconds,
// which only Shutdown pays.
func inOnClose() bool {
	pcs := make([]uintptr, 64)
	for {
		n := runtime.Callers(3, pcs)
		if n < len(pcs) {
			pcs = pcs[:n]
			break
		}
		pcs = make([]uintptr, 2*len(pcs))
	}
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if f.Function == deliverName {
			return true
		}
		if !more {
			return false
		}
	}
}

// Stats returns a snapshot of c's counters.
func (c *Closer) Stats() Stats {
	c.ready()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats.snapshot(c.all.len)
}

// Shutdown makes c close later connections plainly and waits for the ones
// lingering to finish. If ctx ends first, Shutdown closes the rest at once
// and returns an error that wraps ctx.Err() and says how many it closed.
// Either way, when Shutdown returns, c holds no socket and no goroutine.
// Shutdown may be called more than once.
//
// Called from an OnClose (of any Closer), Shutdown does not wait: the
// goroutine running OnClose may be one of c's own, which the connections
// still lingering need, so waiting for them there would never end. It
// then makes c close later connections plainly, closes the lingering
// ones at once if ctx has already ended (returning the same error as
// above), and otherwise leaves them to end by their bounds; c's
// goroutines end after the last of them. A Shutdown called elsewhere,
// before or after, still waits for all of it.
func (c *Closer) Shutdown(ctx context.Context) error {
	c.ready()
	if inOnClose() {
		return c.shutdownNoWait(ctx)
	}
	c.mu.Lock()
	c.down = true
	var err error
	if c.all.len > 0 {
		if c.drained == nil {
			c.drained = make(chan struct{})
		}
		drained := c.drained
		c.mu.Unlock()
		select {
		case <-drained:
			c.mu.Lock()
		case <-ctx.Done():
			c.mu.Lock()
			if k := c.all.len; k > 0 {
				for c.all.front != nil {
					c.be.stop(c.all.front, Shutdown, nil)
				}
				err = fmt.Errorf("linger: shutdown closed %d lingering connections early: %w", k, ctx.Err())
			}
		}
	}
	c.be.shutdown()
	c.unlock()
	c.wg.Wait()
	return err
}

// shutdownNoWait is Shutdown called from an OnClose.
func (c *Closer) shutdownNoWait(ctx context.Context) error {
	c.mu.Lock()
	c.down = true
	var err error
	if k := c.all.len; k > 0 && ctx.Err() != nil {
		for c.all.front != nil {
			c.be.stop(c.all.front, Shutdown, nil)
		}
		err = fmt.Errorf("linger: shutdown closed %d lingering connections early: %w", k, ctx.Err())
	}
	c.be.shutdown()
	c.unlock()
	return err
}

// tcpConn finds the *net.TCPConn under conn: nil if there is none, or
// ErrNilConn if conn or a connection it leads to is nil.
func tcpConn(conn net.Conn) (tcp *net.TCPConn, err error) {
	defer func() {
		// A wrapper's NetConn may dereference a nil receiver.
		if recover() != nil {
			tcp, err = nil, ErrNilConn
		}
	}()
	for i := 0; i < 8; i++ { // a bound against a wrapper that returns itself
		switch v := conn.(type) {
		case nil:
			return nil, ErrNilConn
		case *net.TCPConn:
			if v == nil {
				return nil, ErrNilConn
			}
			return v, nil
		case *Conn:
			if v == nil || v.TCPConn == nil {
				return nil, ErrNilConn
			}
			return v.TCPConn, nil
		case interface{ NetConn() net.Conn }:
			conn = v.NetConn()
		default:
			return nil, nil
		}
	}
	return nil, nil
}
