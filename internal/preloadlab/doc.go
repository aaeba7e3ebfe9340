// Package preloadlab measures the servers people run (OpenJDK, Node,
// Python, openssl s_server, nginx, HAProxy, Apache) as they are and under
// the preloaded liblinger.so (preload/), with real clients and the wire's
// resets counted by a packet capture on the server's side. It has no code
// of its own: its tests are the measurements, a few trials a cell in CI and
// the full tables on demand (see docs/preload-servers.md).
package preloadlab
