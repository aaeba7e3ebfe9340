//go:build !linux

package linger

func newBackend(c *Closer, _ bool) backend { return portable{c} }
