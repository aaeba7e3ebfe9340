package linger

import (
	"net"
	"testing"

	"github.com/linger-go/linger/internal/proc"
	"golang.org/x/net/nettest"
)

// TestConnConformance runs golang.org/x/net/nettest's suite for net.Conn on
// connections accepted through Listener, on both backends and on either end
// of the pipe: deadlines, concurrent calls and Close behave as on the
// *net.TCPConn underneath, lingering included.
func TestConnConformance(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			fds := proc.OpenFDs()
			h := newHarness(t, Config{}, be.portable)
			ln := h.Listener(listen(t))
			pipes := 0
			accepted := func() (srv, cli net.Conn, stop func(), err error) {
				cli, err = net.Dial("tcp", ln.Addr().String())
				if err != nil {
					return nil, nil, nil, err
				}
				srv, err = ln.Accept()
				if err != nil {
					cli.Close()
					return nil, nil, nil, err
				}
				pipes++
				if _, ok := srv.(*Conn); !ok {
					t.Errorf("Accept returned %T, want *linger.Conn", srv)
				}
				return srv, cli, func() { srv.Close(); cli.Close() }, nil
			}
			t.Run("accepted first", func(t *testing.T) { nettest.TestConn(t, accepted) })
			t.Run("accepted second", func(t *testing.T) {
				nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) {
					srv, cli, stop, err := accepted()
					return cli, srv, stop, err
				})
			})
			if err := h.Shutdown(t.Context()); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			ln.Close()
			// Every accepted connection was handed off once, whichever
			// test closed it and however.
			if reports := len(h.reports); reports != pipes {
				t.Errorf("%d reports for %d accepted connections", reports, pipes)
			}
			if now := proc.OpenFDs(); now > fds {
				t.Errorf("%d descriptors open at the end, %d at the start", now, fds)
			}
		})
	}
}
