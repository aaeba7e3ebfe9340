package watch

import "net/netip"

// flowKey names a connection by its two ends, the server's first.
type flowKey struct {
	server, peer netip.AddrPort
}

// flowTable holds at most its capacity of flows, least recently used
// first out. The flows live in one slice linked through their indices, so
// a full table allocates nothing per connection.
type flowTable struct {
	index map[flowKey]int32
	flows []flow
	// head is the most recently used flow, tail the least; -1 when empty.
	head, tail int32
	capacity   int
}

// newFlowTable returns an empty table. It grows as flows come, up to
// capacity, rather than taking the full table's memory (some 10 MB for
// 64k flows) from the start.
func newFlowTable(capacity int) *flowTable {
	return &flowTable{index: map[flowKey]int32{}, head: -1, tail: -1, capacity: capacity}
}

// get returns key's flow, now the most recently used, or nil.
func (t *flowTable) get(key flowKey) *flow {
	i, ok := t.index[key]
	if !ok {
		return nil
	}
	t.unlink(i)
	t.pushFront(i)
	return &t.flows[i]
}

// insert adds a zero flow for key, which must not be in the table, and
// returns it. When the table is full the least recently used flow makes
// room; insert returns a copy of it in evicted.
func (t *flowTable) insert(key flowKey) (f *flow, evicted flow, ok bool) {
	var i int32
	switch {
	case len(t.flows) < t.capacity:
		i = int32(len(t.flows))
		t.flows = append(t.flows, flow{})
	default:
		i = t.tail
		evicted, ok = t.flows[i], true
		delete(t.index, evicted.key)
		t.unlink(i)
	}
	t.flows[i] = flow{key: key}
	t.index[key] = i
	t.pushFront(i)
	return &t.flows[i], evicted, ok
}

// len returns the number of flows held.
func (t *flowTable) len() int { return len(t.index) }

func (t *flowTable) unlink(i int32) {
	f := &t.flows[i]
	if f.prev >= 0 {
		t.flows[f.prev].next = f.next
	} else {
		t.head = f.next
	}
	if f.next >= 0 {
		t.flows[f.next].prev = f.prev
	} else {
		t.tail = f.prev
	}
	f.prev, f.next = -1, -1
}

func (t *flowTable) pushFront(i int32) {
	f := &t.flows[i]
	f.prev, f.next = -1, t.head
	if t.head >= 0 {
		t.flows[t.head].prev = i
	}
	t.head = i
	if t.tail < 0 {
		t.tail = i
	}
}
