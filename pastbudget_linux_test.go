//go:build linux

package linger

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
	"golang.org/x/sys/unix"
)

// A peer already past its byte budget when Close is called is closed in
// Close, plainly, with no duplicate: the event loop only. Under pressure
// SIOCINQ finds it before anything is read.

// pressureConfig puts a Closer under pressure once three silent peers
// linger (three quarters of MaxConns 4), with a pressure budget of 16 KiB.
var pressureConfig = Config{MaxConns: 4, MaxDiscard: 4 << 20, PressureDiscard: 16 << 10}

// pressure hands off three silent peers from 127.0.0.2 to .4, which puts a
// Closer made with pressureConfig under pressure.
func pressure(t *testing.T, h *harness, ln *net.TCPListener) {
	t.Helper()
	for i := range 3 {
		s, _ := pair(t, ln, net.IPv4(127, 0, 0, byte(2+i)))
		h.Close(s)
	}
	h.mu.Lock()
	b := h.budget()
	h.mu.Unlock()
	if b != pressureConfig.PressureDiscard {
		t.Fatalf("premise: budget %d after three silent peers, want the pressure budget %d", b, pressureConfig.PressureDiscard)
	}
}

// underPressure returns a Closer made with cfg (pressureConfig, or a
// variant of it) and a listener, the Closer put under pressure, and
// checks at the end of the test that every descriptor was given back.
func underPressure(t *testing.T, cfg Config) (*harness, *net.TCPListener) {
	t.Helper()
	h := newCountedHarness(t, cfg, false)
	ln := listen(t)
	pressure(t, h, ln)
	return h, ln
}

// lastWord is what the server writes before it closes.
var lastWord = []byte("HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n\r\n")

// readToEnd reads from cli until an error and returns what it read and
// the error (io.EOF for a FIN).
func readToEnd(cli *net.TCPConn) ([]byte, error) {
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := cli.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
}

// TestPastBudgetOnTheWire: under pressure, a peer that has sent more than
// the pressure budget when Close is called gets a reset, as a plain close
// would have sent, and one below it is unaffected: our last word, then a
// FIN, and no reset. As root a capture on loopback counts the resets the
// server sent; without root the client's reads show the same.
func TestPastBudgetOnTheWire(t *testing.T) {
	h := newCountedHarness(t, pressureConfig, false)
	ln := listen(t)
	var capture *testbed.RSTCapture
	if os.Geteuid() == 0 {
		var err error
		if capture, err = testbed.CaptureRSTs("lo", ln.Addr().(*net.TCPAddr).Port); err != nil {
			t.Fatal(err)
		}
		defer capture.Close()
	} else {
		t.Log("not root: resets are not counted on the wire, only seen by the client")
	}
	pressure(t, h, ln)
	for _, tc := range []struct {
		name    string
		sent    int // bytes the peer sends before the hand-off
		want    Outcome
		wantErr error // what the client's reads end with
		rsts    int   // resets the server sends the peer
	}{
		{"past", 64 << 10, Budget, syscall.ECONNRESET, 1},
		{"below", 1 << 10, PeerClosed, io.EOF, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := pair(t, ln, nil)
			if _, err := cli.Write(make([]byte, tc.sent)); err != nil {
				t.Fatal(err)
			}
			if tc.sent > int(pressureConfig.PressureDiscard) {
				waitUnread(t, srv, int(pressureConfig.PressureDiscard)+1)
			} else {
				waitReadable(t, srv, false)
			}
			if _, err := srv.Write(lastWord); err != nil {
				t.Fatal(err)
			}
			if err := h.Close(srv); err != nil {
				t.Fatalf("Close = %v", err)
			}
			got, err := readToEnd(cli)
			// The last word may be lost to the reset, as with a plain
			// close; before a FIN it must be whole.
			if !errors.Is(err, tc.wantErr) || tc.want == PeerClosed && string(got) != string(lastWord) {
				t.Errorf("client read %q, then %v; want the last word, then %v", got, err, tc.wantErr)
			}
			cli.Close()
			r := h.next(t, 5*time.Second)
			if r.Outcome != tc.want || r.Err != nil {
				t.Errorf("report %v %v, want %v", r.Outcome, r.Err, tc.want)
			}
			if tc.want == Budget && (r.Discarded != 0 || r.Held != 0) {
				t.Errorf("report discarded %d, held %v; want 0, 0: SIOCINQ ended it in Close", r.Discarded, r.Held)
			}
			// SIOCOUTQ was read before the close: Unacked is known.
			if r.Unacked < 0 || r.Unacked > int64(len(lastWord)) {
				t.Errorf("report unacked %d, want 0 to %d", r.Unacked, len(lastWord))
			}
			if capture != nil {
				port := cli.LocalAddr().(*net.TCPAddr).Port
				// The capture reads in the background.
				for deadline := time.Now().Add(time.Second); capture.RSTs()[port] < tc.rsts && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
				time.Sleep(20 * time.Millisecond)
				if n := capture.RSTs()[port]; n != tc.rsts {
					t.Errorf("the server sent %d resets to the peer, want %d", n, tc.rsts)
				}
			}
		})
	}
	if s := h.Stats(); s.Lingering != 3 || s.Outcomes[Budget] != 1 || s.Outcomes[PeerClosed] != 1 || s.Discarded != 1<<10 {
		t.Errorf("stats: %d lingering, %d budget, %d peer_closed, %d discarded; want 3, 1, 1, 1024",
			s.Lingering, s.Outcomes[Budget], s.Outcomes[PeerClosed], s.Discarded)
	}
}

// blockingWrite writes to c until it fails: to a peer that does not read,
// it blocks once the peer's window and our send buffer are full.
func blockingWrite(c net.Conn, errc chan<- error) {
	buf := make([]byte, 1<<20)
	for {
		if _, err := c.Write(buf); err != nil {
			errc <- err
			return
		}
	}
}

// TestPastBudgetWithBlockedWrite: a goroutine blocked in Write on the
// connection when Close resets it for its budget returns net.ErrClosed,
// not EPIPE or a reset: Close closes the caller's descriptor as a plain
// close would, which wakes it first.
func TestPastBudgetWithBlockedWrite(t *testing.T) {
	h, ln := underPressure(t, pressureConfig)
	const trials = 10
	for i := range trials {
		srv, cli := pair(t, ln, nil)
		errc := make(chan error, 1)
		go blockingWrite(srv, errc)
		waitParked(t, "linger.blockingWrite")
		if _, err := cli.Write(make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		waitUnread(t, srv, int(pressureConfig.PressureDiscard)+1)
		if err := h.Close(srv); err != nil {
			t.Errorf("trial %d: Close = %v", i, err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("trial %d: blocked Write returned %v, want net.ErrClosed", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("trial %d: blocked Write did not return within 5 s of Close", i)
		}
		if r := h.next(t, 5*time.Second); r.Outcome != Budget || r.Discarded != 0 {
			t.Errorf("trial %d: report %v %v, discarded %d; want budget, 0", i, r.Outcome, r.Err, r.Discarded)
		}
		cli.Close()
	}
}

// TestPastBudgetConcurrentClose: two goroutines closing at once a
// connection whose peer is past its budget end it once: one Close returns
// nil, the other net.ErrClosed, one budget report, no descriptor left.
func TestPastBudgetConcurrentClose(t *testing.T) {
	h, ln := underPressure(t, pressureConfig)
	const trials = 50
	for i := range trials {
		srv, cli := pair(t, ln, nil)
		if _, err := cli.Write(make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		waitUnread(t, srv, int(pressureConfig.PressureDiscard)+1)
		closeTwice(t, h, srv, i)
		if r := h.next(t, 5*time.Second); r.Outcome != Budget || r.Discarded != 0 {
			t.Errorf("trial %d: report %v %v, discarded %d; want budget, 0", i, r.Outcome, r.Err, r.Discarded)
		}
		cli.Close()
	}
	checkOnce(t, h, Budget, trials, 3)
}

// TestPastBudgetEdges: what SIOCINQ counts, at the edges of the budget,
// under pressure. It counts bytes, not the peer's FIN, so a peer that sent
// exactly the budget and closed is not past it, as the drain's one byte
// more than the budget allows would find. Bytes queued before a peer's
// reset stay readable, and counted: such a peer ends by its budget, as the
// drain would have found too. Urgent data (MSG_OOB) makes SIOCINQ count
// only the bytes before it, so a peer can hide from it: the first drain
// then reads the budget's worth and one byte more before it ends the
// peer, as Close did before it asked SIOCINQ, no worse.
func TestPastBudgetEdges(t *testing.T) {
	const budget = 16 << 10
	for _, tc := range []struct {
		name          string
		sent          int  // bytes the peer sends
		oob           bool // the first byte goes as urgent data
		end           string
		want          Outcome
		discardedFrom int64 // the report's Discarded, at least
		discardedTo   int64 // and at most
	}{
		{"budget-then-FIN", budget, false, "fin", PeerClosed, budget, budget},
		{"past-then-FIN", budget + 1, false, "fin", Budget, 0, 0},
		{"past-then-RST", 64 << 10, false, "rst", Budget, 0, 0},
		// Discarded budget+1: the drain found it, not SIOCINQ.
		{"past-with-urgent", 64 << 10, true, "", Budget, budget + 1, budget + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, ln := underPressure(t, pressureConfig)
			srv, cli := pair(t, ln, nil)
			data := make([]byte, tc.sent)
			if tc.oob {
				rc, err := cli.SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				var serr error
				rc.Write(func(fd uintptr) bool {
					serr = unix.Sendto(int(fd), data[:1], unix.MSG_OOB, nil)
					return true
				})
				if serr != nil {
					t.Fatal(serr)
				}
				data = data[1:]
			}
			if _, err := cli.Write(data); err != nil {
				t.Fatal(err)
			}
			switch tc.end {
			case "fin":
				cli.CloseWrite()
				waitReadable(t, srv, true)
			case "rst":
				waitUnread(t, srv, int(budget)+1)
				cli.SetLinger(0)
				cli.Close()
				for deadline := time.Now().Add(5 * time.Second); tcpState(t, srv) != tcpClose; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("premise: the peer's reset did not end the connection within 5 s")
					}
				}
			default:
				waitWritten(t, srv, tc.sent)
			}
			if err := h.Close(srv); err != nil {
				t.Fatalf("Close = %v", err)
			}
			r := h.next(t, 5*time.Second)
			if r.Outcome != tc.want || r.Discarded < tc.discardedFrom || r.Discarded > tc.discardedTo {
				t.Errorf("report %v %v, discarded %d; want %v, %d to %d", r.Outcome, r.Err, r.Discarded, tc.want, tc.discardedFrom, tc.discardedTo)
			}
		})
	}
}

// waitWritten waits up to 2 s until the peer has sent n bytes to srv,
// urgent ones included, whatever SIOCINQ counts: TCP_INFO's bytes
// received.
func waitWritten(t *testing.T, srv *net.TCPConn, n int) {
	t.Helper()
	rc, err := srv.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		var got uint64
		rc.Control(func(fd uintptr) {
			if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				got = ti.Bytes_received
			}
		})
		if got >= uint64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("premise: %d bytes received after 2 s, want %d", got, n)
		}
	}
}

// TestPastBudgetEvictsNoOne: a peer ended in Close for its budget is never
// admitted, so it takes no one's place: with lingering at MaxConns, and
// the peer's address at MaxConnsPerIP, nothing is released for it.
func TestPastBudgetEvictsNoOne(t *testing.T) {
	cfg := pressureConfig
	cfg.MaxConns, cfg.MaxConnsPerIP = 3, 1
	h, ln := underPressure(t, cfg)
	srv, cli := pair(t, ln, net.IPv4(127, 0, 0, 2)) // the first silent peer's address
	if _, err := cli.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	waitUnread(t, srv, int(cfg.PressureDiscard)+1)
	if err := h.Close(srv); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if r := h.next(t, 5*time.Second); r.Outcome != Budget {
		t.Errorf("report %v %v, want budget", r.Outcome, r.Err)
	}
	if s := h.Stats(); s.Lingering != 3 || s.Outcomes[Released] != 0 {
		t.Errorf("stats: %d lingering, %d released; want 3, 0", s.Lingering, s.Outcomes[Released])
	}
}

// TestPastBudgetRenewsPressure: a steady flood of peers that Close finds
// past the pressure budget keeps the pressure on, although none of them
// ever lingers: each counts as the pressure mark seen, as an eviction does.
// Without that, the pressure ends IdleTimeout after the silent peers that
// began it leave, and the next such peers get MaxDiscard: they are drained
// and linger instead of being reset in Close.
func TestPastBudgetRenewsPressure(t *testing.T) {
	const idle = 500 * time.Millisecond
	cfg := pressureConfig
	cfg.IdleTimeout = idle
	h, ln := underPressure(t, cfg)
	start := time.Now()
	for i := 0; time.Since(start) < 3*idle; i++ {
		srv, cli := pair(t, ln, nil)
		if _, err := cli.Write(make([]byte, 2*cfg.PressureDiscard)); err != nil {
			t.Fatal(err)
		}
		waitUnread(t, srv, int(cfg.PressureDiscard)+1)
		if err := h.Close(srv); err != nil {
			t.Fatalf("peer %d: Close = %v", i, err)
		}
		// Reported within Close, or not at all yet. The silent peers'
		// idle endings come in between.
		var r Report
	reports:
		for {
			select {
			case r = <-h.reports:
				if r.Outcome == Idle {
					continue
				}
			default:
				r = Report{Outcome: Plain, Err: errors.New("no report when Close returned: the peer lingers")}
			}
			break reports
		}
		if r.Outcome != Budget || r.Discarded != 0 {
			t.Fatalf("peer %d, %v after the pressure began: report %v (%v), discarded %d; want budget, 0 (the pressure ended)",
				i, time.Since(start).Round(time.Millisecond), r.Outcome, r.Err, r.Discarded)
		}
		time.Sleep(idle / 4)
	}
	if s := h.Stats(); s.Lingering != 0 {
		t.Errorf("%d lingering at the end, want 0: the silent peers were to leave after IdleTimeout", s.Lingering)
	}
}
