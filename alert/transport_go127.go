//go:build go1.27

package alert

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
)

// stockH2 is true from Go 1.27, whose net/http speaks HTTP/2 over any
// connection with a ConnectionState method, a *Conn included: the
// Transport then runs on net/http's transport alone, whose HTTP/2 is
// faster than x/net's and costs no extra allocation per request.
const stockH2 = true

// h2Transport stands in for the x/net HTTP/2 client that the Transport
// uses before Go 1.27 (transport_go126.go), so that from 1.27 the
// deprecated x/net Transport is not even compiled.
type h2Transport struct{}

func newH2Transport(func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error),
	*tls.Config, *http.Transport) *h2Transport {
	return nil
}

// roundTrip is never called: with stockH2, RoundTrip goes to net/http.
func (*h2Transport) roundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("alert: internal error: x/net HTTP/2 path used from Go 1.27")
}

func (*h2Transport) closeIdle() {}
