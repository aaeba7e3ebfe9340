package lab

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"time"

	"github.com/linger-go/linger/internal/netns"
)

// network is where a cell runs: the server's listener and counters, the
// client's dialer and commands.
type network struct {
	id   string // "loopback" or "netns"
	path string // e.g. "20ms each way, 5% loss"

	serverIP netip.Addr
	listen   func() (net.Listener, error)
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	command  func(ctx context.Context, name string, args ...string) *exec.Cmd
	// counters reads the server's namespace's TCP counters; nil on
	// loopback, where the root namespace mixes server, client and every
	// other program on the machine.
	counters func() (netns.Counters, error)
	// settle is how long after a cell late packets (and the RSTs they
	// provoke) may still be on the path.
	settle time.Duration
	// timeout bounds one client trial.
	timeout time.Duration
	// parallel is how many trials of a cell run at once when the
	// strategy's hold or the path's delay, not the CPU, sets their pace.
	parallel int
	close    func() error
}

func loopback() *network {
	d := net.Dialer{Timeout: 5 * time.Second}
	return &network{
		id:       "loopback",
		path:     "loopback",
		serverIP: netip.MustParseAddr("127.0.0.1"),
		listen:   func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") },
		dial:     d.DialContext,
		command:  exec.CommandContext,
		timeout:  15 * time.Second,
		parallel: 10,
		close:    func() error { return nil },
	}
}

// namespaces returns a network of two namespaces joined by path; its close
// removes them.
func namespaces(path netns.PathConfig) (*network, error) {
	p, err := netns.NewPair(path)
	if err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(p.ServerIP, 0).String()
	return &network{
		id:       "netns",
		path:     path.String(),
		serverIP: p.ServerIP,
		listen:   func() (net.Listener, error) { return p.Server.Listen("tcp", addr) },
		dial:     p.Client.DialContext,
		command:  p.Client.Command,
		counters: p.Server.Counters,
		settle:   4*path.Delay + 100*time.Millisecond,
		// A lossy path with delay moves a 1 MiB upload at a few hundred
		// KB/s; the slowest trials take tens of seconds.
		timeout: 15*time.Second + 1000*path.Delay,
		// The trials wait on the path, not on the CPU: at 5 % loss the
		// forwarder moves a few MB/s and the lab stays under half a core.
		parallel: 16,
		close:    p.Close,
	}, nil
}
