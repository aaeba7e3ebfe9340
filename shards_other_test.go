//go:build !linux

package linger

import (
	"net"
	"testing"
)

// hasShards says whether this platform's event loop has shards.
const hasShards = false

// setShards does nothing: only the Linux event loop has shards.
func setShards(*Closer, int) {}

// checkShards has nothing to check without the Linux event loop.
func checkShards(testing.TB, *Closer, string) int { return 0 }

// waitUnread does nothing: without the Linux event loop, a hand-off does
// not look at what is unread, and the portable backend reads a peer to its
// budget whenever its bytes arrive.
func waitUnread(testing.TB, *net.TCPConn, int) {}
