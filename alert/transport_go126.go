//go:build !go1.27

package alert

// stockH2 is false before Go 1.27: net/http speaks HTTP/2 only over a
// *tls.Conn, so the Transport runs HTTP/2 on golang.org/x/net/http2.
const stockH2 = false
