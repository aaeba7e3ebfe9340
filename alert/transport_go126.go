//go:build !go1.27

// golang.org/x/net/http2's Transport is deprecated in favour of net/http's,
// which before Go 1.27 speaks HTTP/2 only over a *tls.Conn, not over a
// *Conn: this file, compiled only for those Go versions, is where the
// Transport still needs it.
//
//lint:file-ignore SA1019 x/net's HTTP/2 client is what Go before 1.27 offers over a connection that is not a *tls.Conn

package alert

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"

	"golang.org/x/net/http2"
)

// stockH2 is false before Go 1.27: net/http speaks HTTP/2 only over a
// *tls.Conn, so the Transport runs HTTP/2 on golang.org/x/net/http2.
const stockH2 = false

// h2Transport is the Transport's HTTP/2 client before Go 1.27.
type h2Transport struct{ t *http2.Transport }

// newH2Transport returns an HTTP/2 client dialing with dial, with h1's
// compression and idle timeout.
func newH2Transport(dial func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error),
	cfg *tls.Config, h1 *http.Transport) *h2Transport {
	return &h2Transport{&http2.Transport{
		DialTLSContext:     dial,
		TLSClientConfig:    cfg,
		DisableCompression: h1.DisableCompression,
		IdleConnTimeout:    h1.IdleConnTimeout,
	}}
}

func (h *h2Transport) roundTrip(r *http.Request) (*http.Response, error) { return h.t.RoundTrip(r) }

func (h *h2Transport) closeIdle() { h.t.CloseIdleConnections() }
