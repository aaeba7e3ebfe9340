//go:build !linux

package linger

import "testing"

// hasShards says whether this platform's event loop has shards.
const hasShards = false

// setShards does nothing: only the Linux event loop has shards.
func setShards(*Closer, int) {}

// checkShards has nothing to check without the Linux event loop.
func checkShards(testing.TB, *Closer, string) int { return 0 }
