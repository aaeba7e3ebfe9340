package linger

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/connerr"
)

// Each bound against a peer built to break it.

func TestIdlePeerThatNeverCloses(t *testing.T) {
	const idle = 200 * time.Millisecond
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{IdleTimeout: idle}, be.portable)
			srv, _ := pair(t, listen(t), nil)
			h.Close(srv)
			r := h.next(t, 5*time.Second)
			if r.Outcome != Idle {
				t.Errorf("outcome %v, want %v", r.Outcome, Idle)
			}
			if r.Held < idle || r.Held > idle+500*time.Millisecond {
				t.Errorf("held %v, want about %v", r.Held, idle)
			}
		})
	}
}

func TestPeerThatSendsWithoutEnd(t *testing.T) {
	const budget = 1 << 20
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{MaxDiscard: budget}, be.portable)
			srv, cli := pair(t, listen(t), nil)
			stop := send(cli, 0, 0)
			defer stop()
			h.Close(srv)
			r := h.next(t, 10*time.Second)
			if r.Outcome != Budget {
				t.Errorf("outcome %v (%v), want %v", r.Outcome, r.Err, Budget)
			}
			if r.Discarded <= budget || r.Discarded > budget+64<<10 {
				t.Errorf("discarded %d, want just over the budget %d", r.Discarded, budget)
			}
		})
	}
}

// TestHardCap: a peer that trickles bytes stays active forever; MaxHold
// ends it.
func TestHardCap(t *testing.T) {
	const hold = 600 * time.Millisecond
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{IdleTimeout: 200 * time.Millisecond, MaxHold: hold}, be.portable)
			srv, cli := pair(t, listen(t), nil)
			done := make(chan struct{})
			defer close(done)
			go func() {
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-done:
						return
					case <-tick.C:
						if _, err := cli.Write([]byte("x")); err != nil {
							return
						}
					}
				}
			}()
			h.Close(srv)
			r := h.next(t, 5*time.Second)
			if r.Outcome != HardCap {
				t.Errorf("outcome %v, want %v", r.Outcome, HardCap)
			}
			if r.Held < hold || r.Held > hold+300*time.Millisecond {
				t.Errorf("held %v, want about %v", r.Held, hold)
			}
		})
	}
}

// TestPeerResetsMidDrain: the peer is sending when it aborts.
func TestPeerResetsMidDrain(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{}, be.portable)
			srv, cli := pair(t, listen(t), nil)
			stop := send(cli, 0, time.Millisecond)
			h.Close(srv)
			time.Sleep(50 * time.Millisecond)
			stop()
			cli.SetLinger(0) // close sends RST
			cli.Close()
			r := h.next(t, 5*time.Second)
			if r.Outcome != PeerReset {
				t.Errorf("outcome %v (%v), want %v", r.Outcome, r.Err, PeerReset)
			}
			if r.Discarded == 0 {
				t.Error("nothing discarded before the reset")
			}
		})
	}
}

// TestCapReleasesLongestLingering: at MaxConns, each new connection pushes
// out the oldest, and no more than MaxConns ever linger.
func TestCapReleasesLongestLingering(t *testing.T) {
	const capacity, total = 8, 20
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{MaxConns: capacity}, be.portable)
			ln := listen(t)
			var order []string
			for range total {
				srv, _ := pair(t, ln, nil)
				order = append(order, srv.RemoteAddr().String())
				h.Close(srv)
				if n := h.Stats().Lingering; n > capacity {
					t.Fatalf("%d lingering, cap %d", n, capacity)
				}
			}
			for i := range total - capacity {
				r := h.next(t, time.Second)
				if r.Outcome != Released || r.RemoteAddr.String() != order[i] {
					t.Errorf("release %d: %v of %v, want %v of %v (the oldest)", i, r.Outcome, r.RemoteAddr, Released, order[i])
				}
			}
			if n := h.Stats().Lingering; n != capacity {
				t.Errorf("%d lingering, want the cap %d", n, capacity)
			}
		})
	}
}

// TestPerPeerCap: one address's connections push out that address's oldest,
// and leave other peers alone.
func TestPerPeerCap(t *testing.T) {
	a, b := net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			h := newHarness(t, Config{MaxConnsPerIP: 2}, be.portable)
			ln := listen(t)
			srvB, _ := pair(t, ln, b)
			h.Close(srvB)
			var fromA []string
			for range 5 {
				srv, _ := pair(t, ln, a)
				fromA = append(fromA, srv.RemoteAddr().String())
				h.Close(srv)
			}
			for i := range 3 {
				r := h.next(t, time.Second)
				if r.Outcome != Released || r.RemoteAddr.String() != fromA[i] {
					t.Errorf("release %d: %v of %v, want %v of %v", i, r.Outcome, r.RemoteAddr, Released, fromA[i])
				}
			}
			if n := h.Stats().Lingering; n != 3 {
				t.Errorf("%d lingering, want 2 from %v and 1 from %v", n, a, b)
			}
		})
	}
}

// TestSlowReaderGetsEverything: the server queued 4 MiB that the client
// reads slowly, taking several idle timeouts, while the client keeps
// uploading or not. Progress, seen as incoming bytes or as acknowledgements
// of ours, keeps the connection until the client has it all.
//
// The portable backend sees only incoming bytes, so there the test's
// premise is that the uploader, writing every 10 ms, never pauses for an
// idle timeout; the idle timeout is 75 times that, and the test measures
// the longest pause and says so if a loaded machine broke the premise. The
// byte budget is out of the way: it is not what this test is about.
func TestSlowReaderGetsEverything(t *testing.T) {
	const size = 4 << 20
	for _, be := range backends {
		for _, upload := range []bool{true, false} {
			if be.portable && !upload {
				continue // the portable backend cannot see acknowledgements
			}
			name := be.name + "/silent"
			if upload {
				name = be.name + "/uploading"
			}
			t.Run(name, func(t *testing.T) {
				idle := 250 * time.Millisecond
				if be.portable {
					idle = 750 * time.Millisecond
				}
				h := newHarness(t, Config{IdleTimeout: idle, MaxHold: 20 * time.Second, MaxDiscard: 1 << 30}, be.portable)
				srv, cli := pair(t, listen(t), nil)
				// A small receive buffer, so the server's 4 MiB sit in its
				// send queue while the client reads.
				cli.SetReadBuffer(64 << 10)
				cli.Write(make([]byte, 1000)) // unread by the server: a plain close would reset
				up := &uploader{}
				if upload {
					up.start(cli, 10*time.Millisecond) // 1.6 MB/s
				}
				wrote := make(chan error, 1)
				go func() {
					_, err := srv.Write(make([]byte, size))
					if err == nil {
						err = h.Close(srv)
					}
					wrote <- err
				}()
				start := time.Now()
				var got int
				buf := make([]byte, 32<<10)
				cli.SetReadDeadline(time.Now().Add(15 * time.Second))
				var readErr error
				for {
					n, err := cli.Read(buf)
					got += n
					if err == io.EOF {
						break
					}
					if err != nil {
						readErr = err
						break
					}
					time.Sleep(10 * time.Millisecond) // 3 MB/s at most: over a second, several idle timeouts
				}
				gap := up.stop()
				if readErr != nil {
					if upload && be.portable && gap >= idle {
						t.Skipf("premise broken by the machine's load: the uploader paused %v, longer than the idle timeout %v (client read %d of %d bytes, then: %v)", gap, idle, got, size, readErr)
					}
					t.Fatalf("client read %d of %d bytes, then: %v (longest pause between uploads %v)", got, size, readErr, gap)
				}
				if err := <-wrote; err != nil {
					t.Fatal(err)
				}
				if got != size {
					t.Fatalf("client read %d bytes, want %d", got, size)
				}
				t.Logf("read %d bytes in %v; longest pause between uploads %v", got, time.Since(start), gap)
				cli.Close()
				if r := h.next(t, 5*time.Second); r.Outcome != PeerClosed {
					t.Errorf("outcome %v (%v), want %v", r.Outcome, r.Err, PeerClosed)
				}
			})
		}
	}
}

// uploader writes 16 KiB to a connection at an interval and measures the
// longest pause between two writes, which a loaded machine can stretch.
type uploader struct {
	done chan struct{}
	wg   sync.WaitGroup
	gap  time.Duration
}

func (u *uploader) start(c net.Conn, every time.Duration) {
	u.done = make(chan struct{})
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		buf := make([]byte, 16<<10)
		last := time.Now()
		for {
			select {
			case <-u.done:
				return
			default:
			}
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := c.Write(buf); err != nil && !connerr.IsTimeout(err) {
				return
			}
			now := time.Now()
			u.gap = max(u.gap, now.Sub(last))
			last = now
			time.Sleep(every)
		}
	}()
}

// stop stops the uploader, if started, and returns the longest pause.
func (u *uploader) stop() time.Duration {
	if u.done != nil {
		close(u.done)
		u.wg.Wait()
	}
	return u.gap
}
