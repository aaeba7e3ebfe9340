// Package linger closes TCP connections so that the last bytes a server
// wrote reach the peer.
//
// When a server closes a socket that still has unread incoming data, the
// kernel answers with a TCP reset instead of a FIN and throws away whatever it
// had not yet sent (RFC 1122 4.2.2.13). A TLS fatal alert, a final HTTP
// response or an error line written just before the close dies with the
// connection, and the client reports "connection reset by peer" instead of
// "bad certificate". This happens routinely with TLS 1.3 client certificates:
// the client finishes its handshake and starts sending before the server has
// checked its certificate.
//
// A [Closer] fixes this with a lingering close: it takes the connection from
// its owner and returns at once; in the background it shuts down writing (a
// FIN follows the bytes already queued), reads and discards whatever the peer
// still sends until the peer closes, and only then releases the socket.
// Every lingering connection is bounded in time, bytes and number (see
// [Config]), so a hostile peer costs little and past the bounds linger
// degrades to a plain close, never to something worse.
//
// The usual integration is two lines around an existing listener (the zero
// Config has sensible bounds):
//
//	lc, err := linger.New(linger.Config{})
//	...
//	srv.ServeTLS(lc.Listener(ln), certFile, keyFile)
//
// after which every connection accepted from ln, and every TLS connection
// built on it, lingers when closed. [Closer.Close] hands off a single
// connection, and [Closer.Shutdown] ends lingering when the server stops.
//
// On Linux a goroutine per P holds the lingering sockets in an epoll set and
// discards incoming bytes with recv(MSG_TRUNC), without copying them to user
// space; elsewhere a goroutine per lingering connection drains it through the
// Go runtime's poller.
//
// The client side, which reports a server's TLS alert instead of the reset
// that followed it, is in package [github.com/linger-go/linger/alert].
package linger
