package linger

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/proc"
)

// TestConcurrentHandoffs races hand-offs, releases under the cap, peers that
// close, reset or stay, Stats and a Shutdown in the middle: every connection
// is reported exactly once, the cap holds, and nothing is left behind. The
// event loop has three shards.
func TestConcurrentHandoffs(t *testing.T) {
	const workers, each, capacity = 8, 40, 16
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			fds := proc.OpenFDs()
			c, err := newCloser(Config{MaxConns: capacity, IdleTimeout: 300 * time.Millisecond}, be.portable)
			if err != nil {
				t.Fatal(err)
			}
			// Several shards, starting and ending around the Shutdown,
			// whatever GOMAXPROCS is.
			setShards(c, 3)
			var mu sync.Mutex
			reported := 0
			last := map[string]Report{} // the latest report for each client address
			c.cfg.OnClose = func(r Report) {
				mu.Lock()
				reported++
				last[r.RemoteAddr.String()] = r
				mu.Unlock()
			}
			// A hand-off that starts after Shutdown has returned must be
			// closed plainly, and a plain close is reported before Close
			// returns, so the worker can check its own report.
			var down atomic.Bool
			var afterDown atomic.Int64
			checkPlain := func(peer string) {
				mu.Lock()
				r, ok := last[peer]
				mu.Unlock()
				if !ok || r.Outcome != Plain || !errors.Is(r.Err, ErrShutdown) {
					t.Errorf("hand-off after Shutdown: report %+v (found %v), want %v with ErrShutdown", r, ok, Plain)
				}
			}
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
						// Accept may return another worker's connection:
						// the report names the accepted one's peer.
						peer, after := srv.RemoteAddr().String(), down.Load()
						c.Close(srv)
						if after {
							afterDown.Add(1)
							checkPlain(peer)
						}
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
			// Shutdown while hand-offs are still coming: those after it
			// close plainly, and the lingering ones end within the context.
			time.Sleep(20 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			c.Shutdown(ctx)
			down.Store(true)
			cancel()
			wg.Wait()
			// One more hand-off after Shutdown, so that the plain close is
			// checked even if the workers all finished before it.
			cli, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			srv, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			cli.Write([]byte("unread"))
			peer := srv.RemoteAddr().String()
			if err := c.Close(srv); err != nil {
				t.Errorf("Close after Shutdown: %v", err)
			}
			checkPlain(peer)
			clients = append(clients, cli)
			t.Logf("%d of %d worker hand-offs came after Shutdown returned", afterDown.Load(), workers*each)
			const total = workers*each + 1
			c.Shutdown(context.Background())
			close(stopWatch)
			if peak := <-watched; peak > capacity {
				t.Errorf("%d lingering at the peak, cap %d", peak, capacity)
			}
			mu.Lock()
			if reported != total {
				t.Errorf("%d reports for %d hand-offs", reported, total)
			}
			mu.Unlock()
			st := c.Stats()
			var closed uint64
			for _, n := range st.Outcomes {
				closed += n
			}
			if st.Lingering != 0 || closed != total {
				t.Errorf("stats %+v, want nothing lingering and %d closed", st, total)
			}
			for _, cl := range clients {
				cl.Close()
			}
			ln.Close()
			if now := proc.OpenFDs(); now > fds {
				t.Errorf("%d descriptors open at the end, %d at the start", now, fds)
			}
		})
	}
}
