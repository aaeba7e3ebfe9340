package linger

// list is a doubly linked list of entries, oldest first, that keeps its own
// length. An entry is on up to three lists at once (the Closer's, its
// peer's, and that of entries holding queued bytes), each through its own
// pair of links, so a list knows which pair is its.
type list struct {
	front, back *entry
	len         int
	which       uint8 // byAge, byPeer or byQueue: the entry links this list uses
}

// The link pairs of an entry.
const (
	byAge   = 0
	byPeer  = 1
	byQueue = 2
)

// link is one pair of an entry's neighbours on one list.
type link struct{ prev, next *entry }

// push appends e, which must not be on a list of l's kind, at the back.
func (l *list) push(e *entry) {
	k := &e.links[l.which]
	k.prev, k.next = l.back, nil
	if l.back != nil {
		l.back.links[l.which].next = e
	} else {
		l.front = e
	}
	l.back = e
	l.len++
}

// remove unlinks e, which must be on l.
func (l *list) remove(e *entry) {
	k := &e.links[l.which]
	if k.prev != nil {
		k.prev.links[l.which].next = k.next
	} else {
		l.front = k.next
	}
	if k.next != nil {
		k.next.links[l.which].prev = k.prev
	} else {
		l.back = k.prev
	}
	k.prev, k.next = nil, nil
	l.len--
}
