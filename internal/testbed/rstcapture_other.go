//go:build !linux

package testbed

import (
	"fmt"
	"runtime"
)

// An RSTCapture counts the TCP resets a server sends. It needs Linux's
// packet sockets.
type RSTCapture struct{}

// CaptureRSTs returns an error: packet capture needs Linux.
func CaptureRSTs(ifname string, port int) (*RSTCapture, error) {
	return nil, fmt.Errorf("capturing RSTs needs Linux packet sockets, not %s", runtime.GOOS)
}

// RSTs returns nil.
func (c *RSTCapture) RSTs() map[int]int { return nil }

// Close does nothing.
func (c *RSTCapture) Close() error { return nil }
