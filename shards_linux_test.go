//go:build linux

package linger

import (
	"math"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hasShards says whether this platform's event loop has shards.
const hasShards = true

// setShards gives c's event loop n shards (n > 0), whatever GOMAXPROCS
// was when c was made, so that tests running with GOMAXPROCS=1 still
// cover more than one; it does nothing on the portable backend or for
// n < 1. c must not have handed anything off yet.
func setShards(c *Closer, n int) {
	ls, ok := c.be.(*loops)
	if !ok || n < 1 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ls.shards = make([]*loop, min(n, maxShards))
	for i := range ls.shards {
		ls.shards[i] = &loop{c: c, set: ls, index: uint8(i), wake: math.MaxInt64, emptySince: -1}
	}
}

// checkShards checks, on the event loop, that every lingering entry is in
// its own shard's timer heap and in the descriptor index, and that the
// shards and the index hold nothing else; c.mu is held. It returns how
// many shards hold entries.
func checkShards(t testing.TB, c *Closer, step string) (used int) {
	t.Helper()
	ls, ok := c.be.(*loops)
	if !ok {
		return 0
	}
	held := 0
	for i, l := range ls.shards {
		held += len(l.timers)
		if len(l.timers) > 0 {
			used++
			if l.ep == nil {
				t.Errorf("%s: shard %d holds %d entries and has no epoll set", step, i, len(l.timers))
			}
		}
		for j, e := range l.timers {
			if int(e.shard) != i || int(e.heapIdx) != j || e.released {
				t.Errorf("%s: shard %d holds at %d an entry of shard %d at %d (released %v)", step, i, j, e.shard, e.heapIdx, e.released)
			}
		}
	}
	if held != c.all.len {
		t.Errorf("%s: the shards' heaps hold %d entries, %d lingering", step, held, c.all.len)
	}
	for e := c.all.front; e != nil; e = e.links[byAge].next {
		if int(e.fd) >= len(ls.byFD) || ls.byFD[e.fd] != e {
			t.Errorf("%s: lingering entry on descriptor %d not in the descriptor index", step, e.fd)
		}
	}
	indexed := 0
	for fd, e := range ls.byFD {
		if e == nil {
			continue
		}
		indexed++
		if e.released || int(e.fd) != fd {
			t.Errorf("%s: the descriptor index holds at %d an entry on %d (released %v)", step, fd, e.fd, e.released)
		}
	}
	if indexed != c.all.len {
		t.Errorf("%s: the descriptor index holds %d entries, %d lingering", step, indexed, c.all.len)
	}
	return used
}

// waitUnread waits up to 2 s until at least n bytes wait unread in srv's
// receive queue (SIOCINQ), so that a hand-off finds them all.
func waitUnread(t testing.TB, srv *net.TCPConn, n int) {
	t.Helper()
	rc, err := srv.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		var q int
		rc.Control(func(fd uintptr) { q, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("premise: %d bytes unread after 2 s, want %d", q, n)
		}
	}
}
