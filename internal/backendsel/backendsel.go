// Package backendsel lets this module's tests, benchmarks and commands make
// package linger use its portable backend on Linux, to compare it with the
// event loop. It is internal so that a library user cannot switch engines,
// by an environment variable or otherwise: only code of this module sets it.
package backendsel

import "sync/atomic"

// Portable, when true, makes linger.New build Closers on the portable
// backend (a goroutine per lingering connection) on Linux too. Closers
// already built keep their backend.
var Portable atomic.Bool
