package linger

import (
	"container/heap"
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// newBackend returns the event loop, one shard per P, or the portable
// backend if asked for (to compare the two).
func newBackend(c *Closer, portableOnly bool) backend {
	if portableOnly {
		return newPortable(c)
	}
	ls := &loops{shards: make([]*loop, min(max(runtime.GOMAXPROCS(0), 1), maxShards))}
	for i := range ls.shards {
		ls.shards[i] = &loop{c: c, set: ls, index: uint8(i), wake: math.MaxInt64, emptySince: -1}
	}
	return ls
}

// loops is the event loop: one shard per P when the Closer was made, each
// with its own epoll set, goroutine, timer heap and grace period, so that
// the sockets ending at once are drained, closed and reported on as many
// Ps as the runtime has, as goroutines per socket would be, instead of in
// turn by one goroutine. A socket goes to the shard holding the fewest.
type loops struct {
	shards []*loop
	// Guarded by Closer.mu.
	byFD []*entry // every lingering entry, indexed by descriptor
}

// maxShards bounds the shards: entry.shard is a byte.
const maxShards = 256

func (ls *loops) stop(e *entry, o Outcome, err error) { ls.shards[e.shard].stop(e, o, err) }

func (ls *loops) shutdown() {
	for _, l := range ls.shards {
		l.shutdown()
	}
}

// loop holds lingering sockets of a Closer, those of one shard (see
// loops), in one epoll set, served by one goroutine.
//
// The epoll descriptor is itself registered with the Go runtime's poller
// (an epoll descriptor is readable while it has events ready), so the
// goroutine parks in the runtime like any network read instead of holding an
// OS thread in epoll_wait, and the timer heap's earliest deadline is simply
// the read deadline of that descriptor.
//
// The set and its goroutine outlive the last lingering socket by loopGrace,
// so that a server closing connections one at a time does not create and
// tear them down for each; the goroutine ends itself when that grace period
// passes with nothing lingering, or at once after Shutdown.
//
// The loop reads from its sockets without Closer.mu: it marks the entries of
// a batch as draining under the lock, reads them unlocked, and takes the lock
// again to record what it read. Close and Stats therefore wait at most for
// that bookkeeping, never for the reads. A draining entry's descriptor stays
// open until the loop is done with it, even if the entry is released in the
// meantime, so the loop never reads from a descriptor number that was closed
// and reused.
type loop struct {
	c     *Closer
	set   *loops
	index uint8 // in set.shards

	// Guarded by Closer.mu.
	ep         *os.File // nil while the goroutine is not running
	rc         syscall.RawConn
	timers     timerHeap
	wake       int64 // the deadline set on ep, or MaxInt64
	emptySince int64 // when the set last became empty, or -1 while it is not

	// Owned by the loop's goroutine.
	events  [128]unix.EpollEvent
	ready   []*entry
	budgets []int64
	clamps  []int // clampRcvBuf to this before draining, if not 0
}

// epollEvents are what the loop waits for on each socket.
const epollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// loopGrace is how long the epoll set and its goroutine stay after the last
// lingering socket leaves. Recreating them costs epoll_create1, fcntl,
// epoll_ctl, close and a goroutine's start and exit, about as much again as
// lingering itself; a goroutine parked for a second costs nothing but its
// stack.
const loopGrace = time.Second

// handOff drains what the peer already sent, detaches tcp's socket, and,
// if the peer has not closed yet, puts the socket in the epoll set.
//
// The first drain runs here, in the caller's goroutine, on tcp's own
// descriptor before anything else, and never waits: at most two
// non-blocking reads of inlineMax bytes in all. A peer that already closed
// or reset (a client that read our last word and left, as most have by the
// time an HTTP server closes) is then done with a plain close of tcp: no
// duplicate, no shutdown, no epoll, no wake of the loop's goroutine, and no
// RST, since nothing is left unread. A pending request is read off without
// a wake-up. (A goroutine still blocked in tcp's Read may get some of those
// bytes first, as it could have just before Close.) Without the shutdown, a
// descriptor of the socket that the application still holds (from File)
// keeps the FIN back, as it would after a plain close; shutting down first
// would cost a system call on every such close, and would give a Write
// blocked on a half-closed peer EPIPE instead of net.ErrClosed.
// A peer already past its byte budget is closed plainly as well, with the
// RST that a plain close with unread bytes sends: it would end at the loop's
// first read anyway. Under pressure, when the budget is small, SIOCINQ
// finds such a peer before anything is read (pastBudget).
// SIOCOUTQ is read here too, before the Closer's lock is taken: a system
// call under the lock can cost the lock's holder its P, and everyone
// waiting for the lock the wait for another.
func (ls *loops) handOff(tcp *net.TCPConn, addr netip.AddrPort, budget int64) error {
	c := ls.shards[0].c
	var r drainResult
	unacked := int64(-1)
	clamp := c.clampFor(budget)
	underPressure := c.pressured(budget)
	fd, err := detachFD(tcp, func(s int) bool {
		if underPressure && !c.noInq && pastBudget(s, budget) {
			r = drainResult{end: Budget, done: true}
		} else {
			if clamp > 0 {
				clampRcvBuf(s, clamp)
			}
			// One more byte than the budget allows, as in round. The
			// drain stops at inlineMax even with a pressure budget no
			// larger: spending all of it here, to end a peer writing flat
			// out at once, measured worse under a flood (before pressure
			// was held for IdleTimeout and renewed by such endings), and
			// SIOCINQ above now ends those peers without reading them.
			r = drainUpTo(s, budget+1, inlineMax, 2)
		}
		if !r.done {
			return false
		}
		// Not shut down yet: no FIN of ours is counted.
		if q, err := unix.IoctlGetInt(s, unix.SIOCOUTQ); err == nil {
			unacked = int64(q)
		}
		return true
	})
	if err != nil {
		// Whatever the first drain read is gone: the report counts it.
		var ended *closedError
		switch {
		case errors.Is(err, errTaken), r.n == 0:
		case errors.As(err, &ended):
			ended.discarded = r.n
		default:
			err = &drainedError{n: r.n, err: err}
		}
		return err
	}
	if fd < 0 {
		// Nothing to linger for: the socket ended, unadmitted, so it
		// evicts no one.
		c.mu.Lock()
		if underPressure && r.end == Budget {
			// A peer past the pressure budget at Close is the flood
			// that the pressure is for, yet it never lingers, so it
			// would not keep lingering at the pressure mark: count it
			// as the mark seen, as an eviction would be, or a steady
			// flood of such peers ends the pressure after IdleTimeout
			// and the next ones get MaxDiscard.
			c.renewPressure(c.peerKey(addr))
		}
		c.report(Report{RemoteAddr: c.addrOf(addr), Outcome: r.end, Discarded: r.n, Unacked: unacked, Err: r.err})
		c.unlock()
		return nil
	}
	// Bytes of ours, FIN included, not yet acknowledged; unknown (and
	// counted as none against MaxQueued) if SIOCOUTQ fails.
	queued := int64(0)
	e := &entry{fd: int32(fd), heapIdx: -1, discarded: r.n}
	if clamp > 0 {
		e.flags |= clamped
	}
	if q, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ); err == nil {
		queued, unacked = int64(q), unsent(int64(q))
	} else {
		e.flags |= outqUnknown
	}
	c.mu.Lock()
	defer c.unlock()
	if err := c.admit(e, addr, queued); err != nil {
		// Shut down already, so the close sends the rest of our bytes
		// and the FIN, as a plain close would.
		c.fds = append(c.fds, fd)
		c.plainRefused(addr, err)
		return nil
	}
	// The shard holding the fewest: one at a time, every socket goes to
	// the first, whose goroutine is then the only one to wake; at once,
	// they spread evenly.
	l := ls.shards[0]
	for _, s := range ls.shards[1:] {
		if len(s.timers) < len(l.timers) {
			l = s
		}
	}
	e.shard = l.index
	l.start(e)
	return nil
}

// start puts an admitted entry in the epoll set and the timer heap,
// starting the loop's goroutine if it is not running; c.mu is held.
func (l *loop) start(e *entry) {
	c := l.c
	if l.ep == nil {
		if err := l.open(); err != nil {
			c.release(e, Plain, -1, err)
			c.fds = append(c.fds, int(e.fd))
			return
		}
	}
	// epoll_ctl(ADD) runs under Closer.mu. Out of it, the entry would be
	// in byFD and the heap before it is registered, and its descriptor
	// would have to stay open (its number not reused) until the ADD is
	// done, even if it is released meanwhile, with the loop's closing of
	// an emptied set held off as well. It is not worth that machinery:
	// under a flood of 64 uploading peers and 8 CPU burners
	// (BenchmarkCloseLatency), Close takes 10 µs at p50 and Stats 2 µs,
	// ADD included, and the mutex profile of a hold benchmark (16 peers
	// at a time) put the loops' waits for this lock at about 1 µs per
	// hand-off, against hold times of hundreds.
	//
	// One-shot: an event disarms the socket until the loop has drained it
	// and re-armed it (EPOLL_CTL_MOD), so a socket that ends at its first
	// event, as most do, is never armed again, and needs no EPOLL_CTL_DEL
	// either. Re-arming reports at once whatever is left unread, so one
	// busy peer cannot starve the others.
	ev := unix.EpollEvent{Events: epollEvents, Fd: e.fd}
	if err := unix.EpollCtl(l.fd(), unix.EPOLL_CTL_ADD, int(e.fd), &ev); err != nil {
		// ENOSPC (fs.epoll.max_user_watches) or ENOMEM: a plain close.
		c.release(e, Plain, -1, os.NewSyscallError("epoll_ctl", err))
		c.fds = append(c.fds, int(e.fd))
		l.graceIfEmpty()
		return
	}
	for int(e.fd) >= len(l.set.byFD) {
		l.set.byFD = append(l.set.byFD, nil)
	}
	l.set.byFD[e.fd] = e
	e.lastActive = e.start
	e.deadline = min(e.start+int64(c.cfg.IdleTimeout), c.hard(e))
	heap.Push(&l.timers, e)
	l.emptySince = -1
	l.arm(l.timers[0].deadline)
}

func (l *loop) fd() int { return int(l.ep.Fd()) }

// open creates the epoll set and starts the goroutine that serves it.
func (l *loop) open() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	// os.NewFile registers a descriptor with the runtime's poller only if it
	// is already non-blocking.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(epfd), "linger-epoll")
	rc, err := ep.SyscallConn()
	if err == nil {
		// SetReadDeadline fails if the runtime did not take the descriptor.
		err = ep.SetReadDeadline(time.Time{})
	}
	if err != nil {
		ep.Close()
		return err
	}
	l.ep, l.rc, l.wake = ep, rc, math.MaxInt64
	l.c.wg.Add(1)
	go l.run(ep, rc)
	return nil
}

// arm moves ep's read deadline to d, if that is earlier than the one set.
// Moving it later is left to the loop, which wakes at the old deadline and
// finds nothing due: resetting a runtime timer on every hand-off would cost
// more than that one wake-up.
func (l *loop) arm(d int64) {
	if d < l.wake {
		l.wake = d
		l.ep.SetReadDeadline(l.c.epoch.Add(time.Duration(d)))
	}
}

// shutdown makes the goroutine, if it runs, wake and end: Closer.down is
// set, so it finds nothing to wait for.
func (l *loop) shutdown() {
	if l.ep != nil {
		l.wake = math.MinInt64
		l.ep.SetReadDeadline(time.Unix(1, 0))
	}
}

// run is the loop's goroutine. It owns ep: only run closes it, under
// Closer.mu, once nothing has lingered for loopGrace, or after Shutdown.
func (l *loop) run(ep *os.File, rc syscall.RawConn) {
	c := l.c
	defer c.wg.Done()
	for {
		err := rc.Read(func(epfd uintptr) bool {
			// Timeout 0: the runtime's poller did the waiting.
			n, err := unix.EpollWait(int(epfd), l.events[:], 0)
			if n <= 0 {
				// Nothing ready: wait. On an error, EINTR included, report
				// done instead, so that the loop polls again at once: the
				// runtime might not signal readiness a second time.
				return err != nil
			}
			l.round(int(epfd), l.events[:n])
			// A batch that did not fill the array took every event ready,
			// so wait for the next readiness without another EpollWait to
			// find none. Nothing is missed: each socket's wake-up wakes
			// the set's pollers again (ep_poll_callback), ready or not
			// before, and the runtime keeps a readiness that comes while
			// we drain. A full batch may have left events: poll again.
			return n == len(l.events)
		})
		c.mu.Lock()
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The deadline is spent: the runtime reports it on every read
			// until a new one is set.
			l.wake = math.MaxInt64
		default:
			// Not expected from an epoll descriptor; end every entry rather
			// than spin.
			for len(l.timers) > 0 {
				l.finish(l.timers[0], PeerReset, err, true)
			}
		}
		now := c.now()
		l.expire(now)
		if len(l.timers) > 0 {
			l.arm(l.timers[0].deadline)
			c.unlock()
			continue
		}
		if l.emptySince < 0 {
			l.emptySince = now
		}
		if c.down || now-l.emptySince >= int64(loopGrace) {
			l.ep, l.rc = nil, nil
			ep.Close()
			c.unlock()
			return
		}
		l.arm(l.emptySince + int64(loopGrace))
		c.unlock()
	}
}

// drainResult is what one entry's reads found.
type drainResult struct {
	n    int64   // bytes discarded
	end  Outcome // how the entry ends, if done
	err  error
	done bool
}

// round drains the entries with events ready: it marks them under
// Closer.mu, then reads each without it and records what it read under it
// again, one entry at a time. Each entry that ended is closed and
// reported (Closer.unlock) before the next is read: its peer's wait, and
// its report's, does not grow with the number of sockets that became
// ready with it.
func (l *loop) round(epfd int, evs []unix.EpollEvent) {
	c := l.c
	c.mu.Lock()
	shared := c.budget()
	// Peers under pressure of their own (MaxConnsPerIP) are rare: only
	// then is each entry's peer looked up.
	byPeer := !c.pressured(shared) && c.peers != nil && c.now()-c.peerPressed < int64(c.cfg.IdleTimeout)
	for _, ev := range evs {
		if int(ev.Fd) >= len(l.set.byFD) {
			continue
		}
		// The entry may be newer than the event, if the one it was for
		// ended and its descriptor number was reused: a read then finds
		// nothing, which is harmless.
		// The entry may also be another shard's now, for the same reason.
		if e := l.set.byFD[ev.Fd]; e != nil && e.shard == l.index && !e.draining {
			budget := shared
			if byPeer {
				budget = c.budgetFor(c.peerKey(e.addr))
			}
			clamp := c.clampFor(budget)
			if e.discarded > budget {
				// Past a budget that shrank under pressure: the event
				// disarmed it.
				l.finish(e, Budget, nil, false)
				continue
			}
			e.draining = true
			l.ready = append(l.ready, e)
			// Pressure began after its hand-off: clamp it now.
			if clamp > 0 && e.flags&clamped == 0 {
				l.clamps = append(l.clamps, clamp)
				e.flags |= clamped
			} else {
				l.clamps = append(l.clamps, 0)
			}
			// One more byte than the budget allows, so that a peer that
			// sends exactly the budget and then closes is not penalised.
			l.budgets = append(l.budgets, budget-e.discarded+1)
		}
	}
	// The goroutine may go on waiting without returning to run: make sure
	// an empty set still ends after loopGrace.
	l.graceIfEmpty()
	c.unlock()

	for i, e := range l.ready {
		if l.clamps[i] > 0 {
			clampRcvBuf(int(e.fd), l.clamps[i])
		}
		r := drain(int(e.fd), l.budgets[i])
		if !r.done {
			// Re-arm while the descriptor is surely ours: a draining
			// entry's descriptor is closed only after this. If the entry
			// was released meanwhile, its registration is gone (ENOENT),
			// or goes after this.
			ev := unix.EpollEvent{Events: epollEvents, Fd: e.fd}
			if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, int(e.fd), &ev); err != nil && err != unix.ENOENT {
				r.end, r.done, r.err = PeerReset, true, os.NewSyscallError("epoll_ctl", err)
			}
		}
		c.mu.Lock()
		e.draining = false
		switch {
		case e.released:
			// Released while we read; its descriptor was left to us.
			c.fds = append(c.fds, int(e.fd))
		case r.done:
			if r.n > 0 {
				e.discarded += r.n
			}
			l.finish(e, r.end, r.err, false)
		case r.n > 0:
			e.discarded += r.n
			e.lastActive = c.now()
		}
		l.graceIfEmpty()
		c.unlock()
	}
	clear(l.ready)
	l.ready, l.budgets, l.clamps = l.ready[:0], l.budgets[:0], l.clamps[:0]
}

// pastBudget says whether fd's peer has already sent more than budget bytes
// that nobody read: SIOCINQ counts them without copying them. Such a peer
// would end by its budget at the first drain, after it had copied and
// thrown away the budget's worth, which under pressure is every rejection
// that a peer writing flat out costs the server beyond a plain close. An
// error says no: the drain then finds out.
func pastBudget(fd int, budget int64) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	return err == nil && int64(n) > budget
}

// inlineMax bounds what Close discards itself, in at most two reads: a
// request's worth, and then the read that finds the peer's FIN or nothing.
// Discarding costs about 180 µs of CPU per MiB, which Close must not pay
// for a peer uploading flat out: the loop takes over from there.
const inlineMax = 64 << 10

// drain discards what fd's peer has sent, up to budget bytes, and says
// whether the peer closed, reset, or reached the budget. It runs without
// Closer.mu. A few reads at most: a peer sending flat out gets its turn
// again at the next epoll_wait, after the others.
func drain(fd int, budget int64) drainResult { return drainUpTo(fd, budget, budget, 4) }

// drainUpTo is drain that also stops, without ending the connection, once
// it has discarded limit bytes or made reads reads.
func drainUpTo(fd int, budget, limit int64, reads int) (r drainResult) {
	for range reads {
		n, err := recvDiscard(fd, min(budget, limit)-r.n)
		switch {
		case err == unix.EAGAIN:
			return r
		case err == unix.EINTR:
			continue
		case err == unix.ECONNRESET:
			r.end, r.done = PeerReset, true
			return r
		case err != nil:
			r.end, r.done, r.err = PeerReset, true, os.NewSyscallError("recvfrom", err)
			return r
		case n == 0:
			r.end, r.done = PeerClosed, true
			return r
		}
		r.n += int64(n)
		if r.n >= budget {
			r.end, r.done = Budget, true
			return r
		}
		if r.n >= limit {
			return r
		}
	}
	return r
}

// recvDiscard discards up to max bytes queued on fd without copying them.
//
// On a TCP socket, MSG_TRUNC makes recv drop the bytes instead of copying
// them to the buffer (tcp(7), since Linux 2.4), so the buffer is never
// touched and can be NULL: the kernel checks only that the range is in user
// space. If it ever did copy, a NULL buffer would fail with EFAULT rather
// than overwrite memory. x/sys/unix's Recvfrom cannot pass a NULL buffer with
// a length, hence the raw system call.
func recvDiscard(fd int, max int64) (int, error) {
	if max > math.MaxInt32 {
		max = math.MaxInt32
	}
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, uintptr(max),
		unix.MSG_TRUNC|unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// expire handles every timer due at now: a connection past its hard cap
// ends; one whose peer was active within IdleTimeout, has acknowledged more
// of our bytes since we last looked, or still has bytes of ours (or our
// FIN) unacknowledged, gets another IdleTimeout; the rest are idle.
//
// Unacknowledged bytes mean the kernel is still sending, retransmitting or
// probing them: the connection is not idle, and closing it now would reset
// it if the peer, having missed our last word, is still sending. MaxHold
// bounds how long this lasts, and MaxQueued how much memory it takes.
//
// SIOCOUTQ alone tells both: once we have shut down writing nothing more is
// queued, so the count only falls, and a fall other than the FIN's own
// sequence number is bytes of ours acknowledged. TCP_INFO is read only then,
// to date that progress.
func (l *loop) expire(now int64) {
	c := l.c
	idle := int64(c.cfg.IdleTimeout)
	for len(l.timers) > 0 && l.timers[0].deadline <= now {
		e := l.timers[0]
		if now >= c.hard(e) {
			l.finish(e, HardCap, nil, true)
			continue
		}
		if e.lastActive+idle <= now {
			q, err := unix.IoctlGetInt(int(e.fd), unix.SIOCOUTQ)
			if err != nil {
				l.finish(e, Idle, nil, true)
				continue
			}
			outq := int64(q)
			switch {
			case unsent(outq) < unsent(int64(e.queued)):
				e.flags |= progressed
				// tcpi_last_ack_recv dates the last acknowledgement, which
				// is when the progress was made.
				if ti, err := unix.GetsockoptTCPInfo(int(e.fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
					e.lastActive = max(e.lastActive, now-int64(time.Duration(ti.Last_ack_recv)*time.Millisecond))
				}
				if e.lastActive+idle <= now {
					e.lastActive = now
				}
			case outq > 0:
				e.lastActive = now
			default:
				l.finish(e, Idle, nil, true)
				continue
			}
			c.setQueued(e, outq)
			e.flags &^= outqUnknown
		}
		e.deadline = min(e.lastActive+idle, c.hard(e))
		heap.Fix(&l.timers, 0)
	}
}

// unsent is how many bytes of ours a SIOCOUTQ reading of q leaves
// unacknowledged, not counting the FIN, which takes one sequence number
// once we have shut down writing: its acknowledgement alone is not
// progress.
func unsent(q int64) int64 { return max(q-1, 0) }

func (ls *loops) stalled(e *entry) bool {
	q, err := unix.IoctlGetInt(int(e.fd), unix.SIOCOUTQ)
	// A socket that cannot say is not kept for it.
	return err != nil || unsent(int64(q)) >= unsent(int64(e.queued))
}

func (l *loop) stop(e *entry, o Outcome, err error) {
	l.finish(e, o, err, true)
	l.graceIfEmpty()
}

// graceIfEmpty makes sure that a running goroutine with nothing left to
// serve wakes after loopGrace to end itself, even if its deadline was set
// far later for an entry that is gone; c.mu is held. The goroutine arms
// the same deadline itself when the set empties under it.
func (l *loop) graceIfEmpty() {
	if len(l.timers) > 0 || l.ep == nil {
		return
	}
	if l.emptySince < 0 {
		l.emptySince = l.c.now()
	}
	l.arm(l.emptySince + int64(loopGrace))
}

// finish releases e and queues its socket to be closed, by Closer.unlock or,
// if e is draining, by the loop once its reads are done. armed says whether
// e's registration may still report events: it is false only when the loop
// ends e after the one-shot event that disarmed it. A set left empty is the
// loop's to close, after loopGrace.
func (l *loop) finish(e *entry, o Outcome, err error, armed bool) {
	fd := int(e.fd)
	// SIOCOUTQ counts the bytes not yet acknowledged, including our FIN,
	// which takes one sequence number. Since we shut down writing it only
	// falls, so a socket whose last reading left nothing of ours
	// unacknowledged needs no new one; one never read needs one, and
	// reports -1 (unknown) if that fails too.
	unacked := int64(0)
	if e.flags&outqUnknown != 0 || unsent(int64(e.queued)) > 0 {
		unacked = -1
		if q, qerr := unix.IoctlGetInt(fd, unix.SIOCOUTQ); qerr == nil {
			unacked = unsent(int64(q))
		}
	}
	// Deregister an armed socket explicitly: epoll forgets a descriptor
	// only when every descriptor of the socket is closed, and the
	// application might hold another one (from File, say). A disarmed
	// registration left behind that way reports nothing.
	if armed {
		unix.EpollCtl(l.fd(), unix.EPOLL_CTL_DEL, fd, nil)
	}
	if errors.Is(err, ErrMaxQueued) {
		// SO_LINGER with a zero timeout makes close send RST and free the
		// send queue at once, instead of leaving it to an orphan socket
		// that keeps sending to a peer that reads slowly on purpose.
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	// Otherwise the receive queue is empty (we drained it) unless the peer
	// is past the budget or sent more since, so the close sends no RST: our
	// FIN is already out and the kernel finishes the connection on its own.
	if !e.draining {
		l.c.fds = append(l.c.fds, fd)
	}
	l.set.byFD[e.fd] = nil
	heap.Remove(&l.timers, int(e.heapIdx))
	l.c.release(e, o, unacked, err)
}

// closeFD closes a descriptor the event loop released.
func closeFD(fd int) { unix.Close(fd) }

// timerHeap orders entries by deadline.
type timerHeap []*entry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = int32(i)
	h[j].heapIdx = int32(j)
}
func (h *timerHeap) Push(x any) {
	e := x.(*entry)
	e.heapIdx = int32(len(*h))
	*h = append(*h, e)
}
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.heapIdx = -1
	return e
}
