//go:build !linux

package watch

// A Watcher reads a packet socket; it exists only on Linux.
type Watcher struct{}

// Start returns ErrUnsupported: packet sockets are Linux's.
func Start(cfg Config) (*Watcher, error) { return nil, ErrUnsupported }

// Snapshot returns nothing.
func (w *Watcher) Snapshot() (Snapshot, error) { return Snapshot{}, ErrUnsupported }

// Close does nothing.
func (w *Watcher) Close() (Snapshot, error) { return Snapshot{}, ErrUnsupported }

// Listening returns ErrUnsupported.
func Listening() (map[uint16]bool, error) { return nil, ErrUnsupported }
