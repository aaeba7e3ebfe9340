// Package netns joins two network namespaces by a path with a chosen delay
// and loss rate (a veth pair with an nftables drop rule, or a TUN forwarder
// in user space for delay), so that the lab and the tests see a real
// kernel's TCP over an impaired network on one machine; and it reads each
// namespace's own TCP counters (resets sent, aborts on close). It needs root
// on Linux; elsewhere NewPair returns ErrUnsupported.
package netns

import (
	"errors"
	"fmt"
	"time"
)

// PathConfig describes the path between the two namespaces of a Pair.
type PathConfig struct {
	// Delay is the one-way delay, so the round trip takes twice as long.
	// Zero joins the namespaces with a plain veth pair; a positive delay
	// routes every packet through a user-space forwarder between two TUN
	// devices, because netem is not available in the kernels we run on.
	Delay time.Duration
	// Loss is the fraction of packets dropped in each direction, 0 to 1.
	Loss float64
}

func (c PathConfig) validate() error {
	if c.Delay < 0 {
		return fmt.Errorf("netns: negative delay %v", c.Delay)
	}
	if !(c.Loss >= 0 && c.Loss <= 1) { // also rejects NaN
		return fmt.Errorf("netns: loss %v not in [0, 1]", c.Loss)
	}
	return nil
}

// String formats the path the way the lab prints it, e.g.
// "20ms each way, 5% loss".
func (c PathConfig) String() string {
	s := "veth"
	if c.Delay > 0 {
		s = c.Delay.String() + " each way"
	}
	if c.Loss > 0 {
		s += fmt.Sprintf(", %g%% loss", c.Loss*100)
	}
	return s
}

// ErrUnsupported is returned by NewPair where network namespaces do not
// exist.
var ErrUnsupported = errors.New("netns: network namespaces need Linux")

// Counters is a snapshot of one network namespace's kernel TCP counters,
// named as nstat names them.
type Counters struct {
	// AbortOnClose is TcpExtTCPAbortOnClose: sockets closed while received
	// data was still unread, which makes the kernel send RST instead of
	// FIN and throw away what it had not sent yet. A lingering close keeps
	// this at zero.
	AbortOnClose uint64
	// AbortOnData is TcpExtTCPAbortOnData: RSTs sent because data arrived
	// after the application had closed the socket, and closes with
	// SO_LINGER set to zero.
	AbortOnData uint64
	// OutRsts is TcpOutRsts: every TCP segment with RST the namespace sent.
	OutRsts uint64
	// RetransSegs is TcpRetransSegs: segments retransmitted, which shows
	// the path's loss at work.
	RetransSegs uint64
	// All holds every counter of /proc/net/netstat and /proc/net/snmp,
	// keyed like "TcpExtTCPAbortOnClose" or "UdpInDatagrams".
	All map[string]uint64
}

// Sub returns c - old, counter by counter: what happened between two
// snapshots.
func (c Counters) Sub(old Counters) Counters {
	d := Counters{
		AbortOnClose: c.AbortOnClose - old.AbortOnClose,
		AbortOnData:  c.AbortOnData - old.AbortOnData,
		OutRsts:      c.OutRsts - old.OutRsts,
		RetransSegs:  c.RetransSegs - old.RetransSegs,
		All:          make(map[string]uint64, len(c.All)),
	}
	for k, v := range c.All {
		d.All[k] = v - old.All[k]
	}
	return d
}
