//go:build !linux

package probe

import (
	"context"
	"net"
	"time"
)

// settle reports whether the server reset the connection after the probe
// stopped sending. Only Linux exposes what it needs (TCP_INFO, SIOCOUTQ);
// elsewhere a reset that follows the last write is not seen, and the watch's
// writes are the only witness.
func settle(ctx context.Context, conn net.Conn, d time.Duration) bool { return false }
