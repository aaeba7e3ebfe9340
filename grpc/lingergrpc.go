// Package lingergrpc keeps grpc-go servers behind a linger.Listener as safe
// as they are without it.
//
// A grpc-go server works behind Closer.Listener with any credentials: a
// rejected client certificate, a connection the server drops, a GOAWAY
// followed by a close all linger, so that the client reads the server's TLS
// alert or last frames instead of a reset. One thing is lost: grpc-go sets
// TCP_USER_TIMEOUT on a connection from its keepalive settings (20 s by
// default), so that the kernel aborts a connection whose data stays
// unacknowledged that long, but only when the connection is a
// *net.TCPConn, which a Listener's *linger.Conn is not. Set
// linger.Config.TCPUserTimeout to UserTimeout of the same keepalive
// parameters to get it back:
//
//	kp := keepalive.ServerParameters{} // grpc-go's defaults
//	lc, err := linger.New(linger.Config{TCPUserTimeout: lingergrpc.UserTimeout(kp)})
//	...
//	srv := grpc.NewServer(grpc.Creds(creds), grpc.KeepaliveParams(kp))
//	srv.Serve(lc.Listener(ln))
//
// The module is separate from linger's so that linger does not depend on
// grpc-go.
package lingergrpc

import (
	"math"
	"time"

	"google.golang.org/grpc/keepalive"
)

// Values grpc-go uses for zero keepalive.ServerParameters fields (its
// internal/transport defaults), mirrored here because it does not export
// them.
const (
	// DefaultKeepaliveTimeout is grpc-go's default ServerParameters.Timeout.
	DefaultKeepaliveTimeout = 20 * time.Second
	// infinity is the ServerParameters.Time that turns keepalive off.
	infinity = time.Duration(math.MaxInt64)
)

// UserTimeout returns the TCP_USER_TIMEOUT that a grpc-go server with
// keepalive parameters kp sets on a *net.TCPConn: kp.Timeout, or
// DefaultKeepaliveTimeout if that is zero, and zero (leave the socket
// alone) when kp.Time turns keepalive off. Give it to
// linger.Config.TCPUserTimeout.
func UserTimeout(kp keepalive.ServerParameters) time.Duration {
	if kp.Time == infinity {
		return 0
	}
	if kp.Timeout == 0 {
		return DefaultKeepaliveTimeout
	}
	return kp.Timeout
}
