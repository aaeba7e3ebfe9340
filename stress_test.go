package linger

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
)

// TestConcurrentHandoffs races hand-offs, releases under the cap, peers that
// close, reset or stay, Stats and a Shutdown in the middle: every connection
// is reported exactly once, the cap holds, and nothing is left behind.
func TestConcurrentHandoffs(t *testing.T) {
	const workers, each, capacity = 8, 40, 16
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			fds := testbed.OpenFDs()
			c, err := newCloser(Config{MaxConns: capacity, IdleTimeout: 300 * time.Millisecond}, be.portable)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			reported := 0
			c.cfg.OnClose = func(Report) { mu.Lock(); reported++; mu.Unlock() }
			ln := listen(t)

			stopWatch := make(chan struct{})
			watched := make(chan int)
			go func() {
				peak := 0
				for {
					select {
					case <-stopWatch:
						watched <- peak
						return
					default:
						peak = max(peak, c.Stats().Lingering)
					}
				}
			}()

			var wg sync.WaitGroup
			var clientsMu sync.Mutex
			var clients []net.Conn
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						cli, err := net.Dial("tcp", ln.Addr().String())
						if err != nil {
							t.Error(err)
							return
						}
						srv, err := ln.Accept()
						if err != nil {
							t.Error(err)
							return
						}
						cli.Write([]byte("unread"))
						c.Close(srv)
						switch (w + i) % 3 {
						case 0:
							cli.Close()
						case 1:
							cli.(*net.TCPConn).SetLinger(0)
							cli.Close()
						default:
							clientsMu.Lock()
							clients = append(clients, cli)
							clientsMu.Unlock()
						}
					}
				}()
			}
			// Shutdown while hand-offs are still coming: they must close
			// plainly, and the lingering ones end within the context.
			time.Sleep(20 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			c.Shutdown(ctx)
			cancel()
			wg.Wait()
			c.Shutdown(context.Background())
			close(stopWatch)
			if peak := <-watched; peak > capacity {
				t.Errorf("%d lingering at the peak, cap %d", peak, capacity)
			}
			mu.Lock()
			if reported != workers*each {
				t.Errorf("%d reports for %d hand-offs", reported, workers*each)
			}
			mu.Unlock()
			st := c.Stats()
			var total uint64
			for _, n := range st.Outcomes {
				total += n
			}
			if st.Lingering != 0 || total != workers*each {
				t.Errorf("stats %+v, want nothing lingering and %d closed", st, workers*each)
			}
			for _, cl := range clients {
				cl.Close()
			}
			ln.Close()
			if now := testbed.OpenFDs(); now > fds {
				t.Errorf("%d descriptors open at the end, %d at the start", now, fds)
			}
		})
	}
}
