// Package bench measures what lingering costs a server, at the process
// level, against the baselines a user would otherwise pick: sockets held at
// once and their memory, release time, hold time after the peer's FIN, and
// a flood of rejected TLS handshakes. It backs "linger bench"; peers and
// clients run in child processes (this same binary, re-run with a hidden
// subcommand) so that the server's descriptors and memory are its own.
package bench
