//go:build !linux

package netns

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
)

// A Pair is two network namespaces joined by an emulated path. Only Linux
// has network namespaces; elsewhere NewPair returns ErrUnsupported.
type Pair struct {
	// Server and Client are the two namespaces.
	Server, Client *Namespace
	// ServerIP is the server's address on the link, ClientIP the client's.
	ServerIP, ClientIP netip.Addr
	// Path is the configuration the pair was made with.
	Path PathConfig
}

// NewPair returns ErrUnsupported: only Linux has network namespaces.
func NewPair(cfg PathConfig) (*Pair, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

// Close does nothing: no Pair exists outside Linux.
func (p *Pair) Close() error { return nil }

// A Namespace is a named network namespace. None exist outside Linux.
type Namespace struct {
	// Name is the namespace's name.
	Name string
}

// Do returns ErrUnsupported.
func (n *Namespace) Do(fn func() error) error { return ErrUnsupported }

// Listen returns ErrUnsupported.
func (n *Namespace) Listen(network, address string) (net.Listener, error) {
	return nil, ErrUnsupported
}

// ListenPacket returns ErrUnsupported.
func (n *Namespace) ListenPacket(network, address string) (net.PacketConn, error) {
	return nil, ErrUnsupported
}

// DialContext returns ErrUnsupported.
func (n *Namespace) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return nil, ErrUnsupported
}

// Command returns a command that fails with ErrUnsupported when run.
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Err = ErrUnsupported
	return cmd
}

// Counters returns ErrUnsupported.
func (n *Namespace) Counters() (Counters, error) { return Counters{}, ErrUnsupported }

// ReadCounters returns ErrUnsupported.
func ReadCounters() (Counters, error) { return Counters{}, ErrUnsupported }

// CleanupStale does nothing: there are no namespaces to clean up.
func CleanupStale() error { return nil }
