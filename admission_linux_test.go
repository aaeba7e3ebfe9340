package linger

// checkShards checks, on the event loop, that every lingering entry is in
// its own shard's timer heap and in the descriptor index, and that the
// shards hold nothing else; d.c.mu is held.
func (d *admissionDriver) checkShards(step string) {
	t := d.t
	ls, ok := d.c.be.(*loops)
	if !ok {
		return
	}
	held := 0
	for i, l := range ls.shards {
		held += len(l.timers)
		for j, e := range l.timers {
			if int(e.shard) != i || int(e.heapIdx) != j || e.released {
				t.Errorf("%s: shard %d holds at %d an entry of shard %d at %d (released %v)", step, i, j, e.shard, e.heapIdx, e.released)
			}
		}
	}
	if held != d.c.all.len {
		t.Errorf("%s: the shards' heaps hold %d entries, %d lingering", step, held, d.c.all.len)
	}
	for e := d.c.all.front; e != nil; e = e.links[byAge].next {
		if int(e.fd) >= len(ls.byFD) || ls.byFD[e.fd] != e {
			t.Errorf("%s: lingering entry on descriptor %d not in the descriptor index", step, e.fd)
		}
	}
}
