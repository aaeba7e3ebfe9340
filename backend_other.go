//go:build !linux

package linger

func newBackend(c *Closer) backend { return portable{c} }
