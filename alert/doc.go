// Package alert makes a TLS client report the fatal alert its peer sent
// instead of the connection reset that followed it.
//
// A server that rejects a client, typically for its certificate, sends a
// fatal alert and closes. If the client is still sending, the server's kernel
// answers with a TCP reset, and the client's next write fails with
// "connection reset by peer", "broken pipe" or, in net/http, "use of closed
// network connection". On Linux the alert usually still sits readable in the
// client's socket, but crypto/tls only reports it to a Read, and most
// clients report the failed Write first. With TLS 1.3 this is the common
// case: the client's handshake completes before the server has checked its
// certificate.
//
// A [Conn] wraps a *tls.Conn. It remembers an alert seen by Read and, when
// Write fails because the connection was reset or closed, it looks for the
// alert (one already seen, or one still readable within a short bound, see
// [WithProbeTimeout]) and returns an [*Error] that carries both the alert
// and the original error:
//
//	conn := alert.Wrap(tls.Client(raw, cfg))
//	if _, err := conn.Write(body); err != nil {
//		var ae *alert.Error
//		if errors.As(err, &ae) {
//			log.Printf("server refused us: %s (alert %d)", ae.Description, ae.Code)
//		}
//		// errors.Is(err, syscall.ECONNRESET) still holds if that is what
//		// the write ran into.
//	}
//
// [NewHTTPClient] and [Transport] do the same for net/http, over HTTP/2 and
// HTTP/1.1 as the server offers; [Dialer] dials a *Conn, within the same
// dial and handshake timeouts as http.DefaultTransport. [FromError] finds
// the alert in any error, including those of an unwrapped *tls.Conn.
//
// On Windows a reset discards what the client had received but not yet
// read, the alert included, so there an alert is reported only if a Read
// had taken it before the reset arrived.
//
// A successful Read or Write costs nothing extra: no additional reads, no
// waiting, no allocation. The server side, which makes sure the alert reaches
// the client in the first place, is package [github.com/linger-go/linger].
package alert
