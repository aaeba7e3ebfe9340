//go:build linux

package linger

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/connerr"
	"github.com/linger-go/linger/internal/quantile"
)

// BenchmarkCloseLatency measures how long Close and Stats take while the
// Closer is busy draining: 64 peers upload flat out into connections the
// server hands off at once (a rejected request each, with the default 8 MiB
// byte budget), while 8 goroutines burn CPU. A peer whose connection ends
// dials again. An op is one Close; the metrics are the latency
// percentiles of Close and of a Stats call made every millisecond.
//
// Close must return at once and Stats must not wait for the draining: the
// loop's p50 should stay within tens of microseconds and its p99 no worse
// than the portable backend's, in the same run:
//
//	go test -run '^$' -bench CloseLatency -benchtime 3000x -count 3 .
func BenchmarkCloseLatency(b *testing.B) {
	const peers, burners = 64, 8
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			c, err := newCloser(Config{}, be.portable)
			if err != nil {
				b.Fatal(err)
			}
			ln := benchListen(b)
			done := make(chan struct{})
			var wg sync.WaitGroup

			// Burners: runnable goroutines competing with the loop for the
			// Ps, as a busy server's handlers would.
			for range burners {
				wg.Add(1)
				go func() {
					defer wg.Done()
					x := 0
					for {
						select {
						case <-done:
							return
						default:
						}
						for i := range 100000 {
							x += i
						}
						runtime.KeepAlive(x)
					}
				}()
			}
			// Peers: each uploads flat out until its connection fails,
			// then dials again.
			for range peers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 64<<10)
					for {
						select {
						case <-done:
							return
						default:
						}
						conn, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
						if err != nil {
							time.Sleep(time.Millisecond)
							continue
						}
						for {
							conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
							if _, err := conn.Write(buf); err != nil {
								if !connerr.IsTimeout(err) {
									break
								}
								select {
								case <-done:
								default:
									continue
								}
								break
							}
						}
						conn.Close()
					}
				}()
			}
			// Stats, every millisecond, timed.
			var statsLat []time.Duration
			var measuring atomic.Bool
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-done:
						return
					case <-tick.C:
					}
					t0 := time.Now()
					c.Stats()
					if d := time.Since(t0); measuring.Load() {
						statsLat = append(statsLat, d)
					}
				}
			}()

			// Warm up: let the flood fill the Closer.
			for range 2 * peers {
				conn, err := ln.AcceptTCP()
				if err != nil {
					b.Fatal(err)
				}
				c.Close(conn)
			}
			closeLat := make([]time.Duration, 0, b.N)
			measuring.Store(true)
			b.ResetTimer()
			for range b.N {
				conn, err := ln.AcceptTCP()
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				c.Close(conn)
				closeLat = append(closeLat, time.Since(t0))
			}
			b.StopTimer()
			measuring.Store(false)
			close(done)
			ln.Close()
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			c.Shutdown(ctx)
			wg.Wait()

			reportPercentiles(b, "close", closeLat)
			reportPercentiles(b, "stats", statsLat)
		})
	}
}

// reportPercentiles reports the p50, p99 and maximum of ds as metrics in
// microseconds. A p99 needs at least 100 samples to differ from the
// maximum; with fewer it is not reported.
func reportPercentiles(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(quantile.NearestRank(ds, 0.50)), name+"-p50-us")
	if len(ds) >= 100 {
		b.ReportMetric(us(quantile.NearestRank(ds, 0.99)), name+"-p99-us")
	}
	b.ReportMetric(us(ds[len(ds)-1]), name+"-max-us")
	b.ReportMetric(float64(len(ds)), fmt.Sprintf("%s-samples", name))
}
