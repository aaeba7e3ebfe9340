//go:build linux

package netns

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// queueLen bounds the packets held per direction. With packets no larger
// than the TUN device's MTU (1500) a full queue holds about 6 MB, and at a
// 20 ms delay it carries some 300 MB/s, far more than two shared cores
// push through a TUN device. Past it the forwarder drops, like a router
// whose buffer is full.
const queueLen = 4096

// readBufSize fits the largest IP packet, although the device never hands
// over more than its MTU.
const readBufSize = 65535

// A forwarder joins two TUN devices, one in each namespace of a Pair: a
// packet the kernel routes into one device is read here, held for the
// delay, and written into the other device, which delivers it to its
// namespace's stack as if it had arrived on a wire.
//
// Per direction a reader goroutine reads the source device, drops at the
// loss rate and enqueues the packet with the time it is due; a writer
// goroutine writes each packet to the other device when it is due. The
// delay is the same for every packet, so due times only grow along the
// queue and a channel serves as the delay queue, keeping packet order.
//
// Both descriptors are non-blocking and live in the runtime's poller
// (os.NewFile registers a descriptor that is already O_NONBLOCK). That is
// what makes stopping safe. A read(2) blocked on a plain blocking
// descriptor is not woken when another thread closes the descriptor: the
// reader would hang until a packet happened to arrive (after Close, none
// ever does, so it would leak), and meanwhile the number could be reused
// by an unrelated open, so a later read would steal from someone else's
// file. Through the poller a Read waits in the runtime, not in the
// kernel; File.Close marks the file closing, wakes that Read (it returns
// os.ErrClosed), and closes the descriptor only after the last operation
// using it has returned. Calling File.Fd would undo all this: it switches
// the descriptor back to blocking mode, so the forwarder never calls it.
type forwarder struct {
	files [2]*os.File // the server's TUN device, the client's
	stop  chan struct{}
	wg    sync.WaitGroup

	mu  sync.Mutex
	err error // the first unexpected read error

	// Counts for tests and diagnosis, over both directions.
	forwarded, lost, overflowed atomic.Uint64
}

// packet is a copy of one IP packet and the time it may leave.
type packet struct {
	due  time.Time
	data []byte
}

// startForwarder takes ownership of the two files and starts forwarding
// between them; close stops it and closes them.
func startForwarder(cfg PathConfig, server, client *os.File) *forwarder {
	f := &forwarder{files: [2]*os.File{server, client}, stop: make(chan struct{})}
	for i := range f.files {
		q := make(chan packet, queueLen)
		f.wg.Add(2)
		go f.read(f.files[i], q, cfg)
		go f.write(f.files[1-i], q)
	}
	return f
}

// read moves packets from src into q until src is closed.
func (f *forwarder) read(src *os.File, q chan<- packet, cfg PathConfig) {
	defer f.wg.Done()
	buf := make([]byte, readBufSize)
	for {
		n, err := src.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				f.fail(fmt.Errorf("netns: forwarder: %w", err))
			}
			return
		}
		if cfg.Loss > 0 && rand.Float64() < cfg.Loss {
			f.lost.Add(1)
			continue
		}
		p := packet{due: time.Now().Add(cfg.Delay), data: append([]byte(nil), buf[:n]...)}
		select {
		case q <- p:
		default:
			f.overflowed.Add(1)
		}
	}
}

// write writes each packet of q to dst when it is due, until stopped.
func (f *forwarder) write(dst *os.File, q <-chan packet) {
	defer f.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var p packet
		select {
		case <-f.stop:
			return
		case p = <-q:
		}
		if d := time.Until(p.due); d > 0 {
			// Since Go 1.23 Reset discards a stale expiry, so the
			// timer can be reused without draining it.
			t.Reset(d)
			select {
			case <-f.stop:
				return
			case <-t.C:
			}
		}
		// One write is one packet. A write can fail for a single
		// packet (EIO while the device is down, EINVAL for a packet the
		// stack refuses); that packet is lost, as on a wire.
		if _, err := dst.Write(p.data); errors.Is(err, os.ErrClosed) {
			return
		} else if err == nil {
			f.forwarded.Add(1)
		}
	}
}

func (f *forwarder) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

// close stops the goroutines, waits for them, and closes the devices. It
// returns the first unexpected read error, which stopped forwarding in one
// direction.
func (f *forwarder) close() error {
	close(f.stop) // wakes the writers
	var errs []error
	for _, file := range f.files {
		errs = append(errs, file.Close()) // wakes the readers: see forwarder
	}
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(append(errs, f.err)...)
}
