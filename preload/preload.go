// Package preload holds the tests of liblinger, the lingering close as a C
// library preloaded into servers that are not written in Go
// (LD_PRELOAD=preload/build/liblinger.so, built by make -C preload; see
// docs/preload.md). The C sources are in this directory; this package has
// no Go code of its own.
package preload
