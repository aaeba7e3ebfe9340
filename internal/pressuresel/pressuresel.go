// Package pressuresel lets this module's benchmarks vary parts of package
// linger's pressure policy, to measure what each is worth against the
// default in the same run. It is internal so that a library user cannot
// change the policy this way: only code of this module sets it.
package pressuresel

import "sync/atomic"

// RcvBuf, when not zero, replaces the receive buffer size (SO_RCVBUF) to
// which linger.New's Closers clamp a lingering socket under pressure: a
// size in bytes, or -1 for no clamp. Closers already built keep theirs.
var RcvBuf atomic.Int64

// NoHold, when true, makes linger.New's Closers end the pressure as soon
// as lingering falls below three quarters of MaxConns (unless a connection
// was evicted within IdleTimeout), instead of IdleTimeout after it was
// last at that mark. Closers already built keep theirs.
var NoHold atomic.Bool

// RcvBufAlways, when true, makes linger.New's Closers clamp every
// lingering socket's receive buffer, under pressure or not. Closers
// already built keep theirs.
var RcvBufAlways atomic.Bool

// NoInq, when true, makes linger.New's Closers read a peer's bytes in
// Close under pressure even if SIOCINQ would show it past its budget
// already. Closers already built keep theirs.
var NoInq atomic.Bool
