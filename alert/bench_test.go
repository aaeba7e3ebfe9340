package alert_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
	"golang.org/x/net/http2"
)

// benchConns dials a server that accepts the client and then runs serve,
// and returns the connection both bare and wrapped: the two sub-benchmarks
// share one TCP connection, so that they differ only by the wrapper and not
// by the kernel's per-connection buffer tuning.
func benchConns(b *testing.B, serve func(*tls.Conn)) map[string]net.Conn {
	p := testbed.SharedPKI(b)
	s := serveTLS(b, false, p.ServerConfig(tls.VersionTLS13), func(tc *tls.Conn) {
		// With -count, every run of the sub-benchmarks uses this one
		// connection, longer than serveTLS's 10 s deadline.
		tc.SetDeadline(time.Time{})
		if tc.Handshake() == nil {
			serve(tc)
		}
	})
	tc := dialTLS(b, s.Addr, p.ClientConfig(&p.Client, tls.VersionTLS13))
	if err := tc.Handshake(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tc.Close() })
	return map[string]net.Conn{"conn=tls": tc, "conn=alert": alert.Wrap(tc)}
}

// benchNames name the sub-benchmarks so that "benchstat -col /conn" compares them.
var benchNames = []string{"conn=tls", "conn=alert"}

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

var http2Runs atomic.Int32

// BenchmarkHTTP2 compares package alert's Transport with net/http's stock
// transport, and with x/net's HTTP/2 transport that it is built on before
// Go 1.27, on a happy path over HTTP/2: GET requests for a 1 KiB body on
// one kept connection, to a server that accepts the client. The clients
// run in the same benchmark binary against the same server; compare them
// with benchstat (see BENCHMARKS.md). Besides wall-clock time it reports
// cpu-ns/op, the process's CPU time (client and server) per request,
// which other work on a shared machine disturbs less.
func BenchmarkHTTP2(b *testing.B) {
	p := testbed.SharedPKI(b)
	srvCfg := p.ServerConfig(tls.VersionTLS13)
	srvCfg.NextProtos = []string{"h2", "http/1.1"}
	s, ln := listen(b, false, srvCfg)
	body := make([]byte, 1<<10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close(); s.stop(b) })
	url := "https://" + s.Addr + "/"
	clients := map[string]func() http.RoundTripper{
		"stock": func() http.RoundTripper {
			var protos http.Protocols
			protos.SetHTTP1(true)
			protos.SetHTTP2(true)
			return &http.Transport{TLSClientConfig: p.ClientConfig(&p.Client, tls.VersionTLS13), Protocols: &protos}
		},
		// x/net's HTTP/2 over a plain *tls.Conn, which package alert's
		// Transport uses before Go 1.27: it tells the wrapper's cost
		// from x/net's.
		"xnet": func() http.RoundTripper {
			//lint:ignore SA1019 x/net's deprecated HTTP/2 client is the baseline measured, as the Transport's before Go 1.27
			return &http2.Transport{TLSClientConfig: p.ClientConfig(&p.Client, tls.VersionTLS13)}
		},
		"alert": func() http.RoundTripper {
			return alert.NewTransport(&alert.Dialer{Config: p.ClientConfig(&p.Client, tls.VersionTLS13)})
		},
	}
	// get makes one request; it reports with Error, not Fatal, because
	// RunParallel calls it from other goroutines.
	get := func(b *testing.B, c *http.Client) bool {
		resp, err := c.Get(url)
		if err != nil {
			b.Error(err)
			return false
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.ProtoMajor != 2 {
			b.Errorf("%s, body: %v; want HTTP/2 and a body", resp.Proto, err)
			return false
		}
		return true
	}
	// Each run starts with another client, so that none is always the
	// one measured last (with -count, the runs follow each other).
	names := []string{"stock", "xnet", "alert"}
	k := int(http2Runs.Add(1)) % len(names)
	names = append(names[k:], names[:k]...)
	for _, mode := range []string{"serial", "parallel"} {
		for _, name := range names {
			b.Run("mode="+mode+"/client="+name, func(b *testing.B) {
				c := &http.Client{Transport: clients[name]()}
				defer c.CloseIdleConnections()
				if !get(b, c) { // dial outside the timing
					return
				}
				b.ReportAllocs()
				cpu0 := proc.CPUTime() // 0 where the system does not say
				b.ResetTimer()
				if mode == "serial" {
					for b.Loop() {
						if !get(b, c) {
							return
						}
					}
				} else {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() && get(b, c) {
						}
					})
				}
				b.StopTimer()
				if cpu1 := proc.CPUTime(); cpu0 > 0 {
					b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
				}
			})
		}
	}
}
