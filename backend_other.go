//go:build !linux

package linger

func newBackend(c *Closer, _ bool) backend { return newPortable(c) }

// closeFD is never called here: only the Linux event loop releases raw
// descriptors.
func closeFD(int) {}
