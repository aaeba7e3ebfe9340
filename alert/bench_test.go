package alert_test

import (
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"testing"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/testbed"
)

// benchConns dials a server that accepts the client and then runs serve,
// and returns the connection both bare and wrapped: the two sub-benchmarks
// share one TCP connection, so that they differ only by the wrapper and not
// by the kernel's per-connection buffer tuning.
func benchConns(b *testing.B, serve func(*tls.Conn)) map[string]net.Conn {
	p := testbed.SharedPKI(b)
	s := serveTLS(b, false, p.ServerConfig(tls.VersionTLS13), func(tc *tls.Conn) {
		if tc.Handshake() == nil {
			serve(tc)
		}
	})
	tc := dialTLS(b, s.Addr, p.ClientConfig(&p.Client, tls.VersionTLS13))
	if err := tc.Handshake(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tc.Close() })
	return map[string]net.Conn{"tls.Conn": tc, "alert.Conn": alert.Wrap(tc)}
}

var benchNames = []string{"tls.Conn", "alert.Conn"}

// BenchmarkWrite writes to a server that reads and discards.
func BenchmarkWrite(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			conns := benchConns(b, func(tc *tls.Conn) { io.Copy(io.Discard, tc) })
			for _, name := range benchNames {
				b.Run(name, func(b *testing.B) {
					c := conns[name]
					buf := make([]byte, size)
					b.SetBytes(int64(size))
					b.ReportAllocs()
					for b.Loop() {
						if _, err := c.Write(buf); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkRead reads from a server that writes 16 KiB at a time without
// end.
func BenchmarkRead(b *testing.B) {
	conns := benchConns(b, func(tc *tls.Conn) {
		buf := make([]byte, 16<<10)
		for {
			if _, err := tc.Write(buf); err != nil {
				return
			}
		}
	})
	for _, name := range benchNames {
		b.Run(name, func(b *testing.B) {
			c := conns[name]
			buf := make([]byte, 16<<10)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
