package linger

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestZeroCloser: a zero Closer lingers with the zero Config's bounds,
// taken at its first use, which may be concurrent (run with -race).
func TestZeroCloser(t *testing.T) {
	var c Closer
	ln := listen(t)
	var wg sync.WaitGroup
	var clients []*net.TCPConn
	var servers []*net.TCPConn
	for range 4 {
		s, cl := pair(t, ln, nil)
		servers, clients = append(servers, s), append(clients, cl)
	}
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Close(s); err != nil {
				t.Errorf("Close: %v", err)
			}
		}()
	}
	wg.Wait()
	if c.cfg.MaxDiscard != DefaultMaxDiscard || c.cfg.MaxConns != DefaultMaxConns {
		t.Errorf("zero Closer runs with %+v, want the defaults", c.cfg)
	}
	for _, cl := range clients {
		cl.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if st := c.Stats(); st.Outcomes[PeerClosed] != 4 {
		t.Errorf("stats %+v, want 4 peer_closed", st)
	}

	// Each method is a first use.
	for name, first := range map[string]func(c *Closer){
		"Stats":    func(c *Closer) { c.Stats() },
		"Shutdown": func(c *Closer) { c.Shutdown(context.Background()) },
		"Listener": func(c *Closer) { c.Listener(ln) },
	} {
		var z Closer
		first(&z)
		if z.be == nil {
			t.Errorf("%s on a zero Closer left it unset", name)
		}
		z.Shutdown(context.Background())
	}
}

// TestOnCloseCallsCloser: OnClose may call every method of its Closer.
// Shutdown from OnClose returns without waiting (it runs on a goroutine
// the lingering connections need); with its context ended it closes them
// at once. On both backends.
func TestOnCloseCallsCloser(t *testing.T) {
	for _, be := range backends {
		for _, ended := range []bool{false, true} {
			name := be.name + "/waiting"
			if ended {
				name = be.name + "/context ended"
			}
			t.Run(name, func(t *testing.T) {
				var c *Closer
				var first atomic.Bool // not a sync.Once: OnClose nests in what it calls
				returned := make(chan error, 1)
				reports := make(chan Report, 16)
				ln := listen(t)
				extra, _ := pair(t, ln, nil)
				cfg := Config{OnClose: func(r Report) {
					reports <- r
					if !first.CompareAndSwap(false, true) {
						return
					}
					c.Stats()
					ctx := context.Background()
					if ended {
						var cancel context.CancelFunc
						ctx, cancel = context.WithCancel(ctx)
						cancel()
					}
					err := c.Shutdown(ctx)
					if cerr := c.Close(extra); cerr != nil { // after Shutdown: closed plainly
						t.Errorf("Close from OnClose: %v", cerr)
					}
					if cerr := c.Close(extra); !errors.Is(cerr, net.ErrClosed) {
						t.Errorf("second Close from OnClose: %v, want net.ErrClosed", cerr)
					}
					returned <- err
				}}
				var err error
				if c, err = newCloser(cfg, be.portable); err != nil {
					t.Fatal(err)
				}
				var clients []*net.TCPConn
				for range 3 {
					s, cl := pair(t, ln, nil)
					c.Close(s)
					clients = append(clients, cl)
				}
				clients[0].Close()
				select {
				case err := <-returned:
					if ended && !errors.Is(err, context.Canceled) || !ended && err != nil {
						t.Errorf("Shutdown from OnClose = %v", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Shutdown called from OnClose did not return")
				}
				for _, cl := range clients[1:] {
					cl.Close()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := c.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown after: %v", err)
				}
				want := Outcome(PeerClosed)
				if ended {
					want = Shutdown
				}
				got := map[Outcome]int{}
				for len(reports) > 0 {
					got[(<-reports).Outcome]++
				}
				if got[PeerClosed] < 1 || got[want] < 1 || got[Plain] != 1 {
					t.Errorf("outcomes %v, want the first peer_closed, the others %v, the extra plain", got, want)
				}
			})
		}
	}
}
