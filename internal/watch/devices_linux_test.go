package watch

import (
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/netns"
)

// TestDevicesFollowed: a watch of every device, started in a namespace of
// the test's, reads each of that namespace's devices but loopback through
// a socket of its own (and none of the host's, though its reader runs on
// some other thread), opens one for a device that appears, and closes it
// when the device goes.
func TestDevicesFollowed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: following devices needs root (a network namespace and packet sockets)")
	}
	pair, err := netns.NewPair(netns.PathConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer pair.Close()
	var w *Watcher
	if err := pair.Server.Do(func() (err error) { w, err = Start(Config{}); return err }); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := w.Close(); err != nil {
			t.Error(err)
		}
	}()
	links := func() []int {
		var idx []int
		if err := pair.Server.Do(func() error {
			ifs, err := net.Interfaces()
			for _, ifi := range ifs {
				if ifi.Name != "lo" {
					idx = append(idx, ifi.Index)
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(idx)
		return idx
	}
	watched := func() []int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return slices.Sorted(maps.Keys(w.devices))
	}
	// waitFor polls past the reader's refresh for the watched devices to
	// be the namespace's.
	waitFor := func(what string) {
		t.Helper()
		want := links()
		for deadline := time.Now().Add(3 * checkEvery); !slices.Equal(watched(), want); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: watching devices %v, the namespace has %v", what, watched(), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("%s: watching devices %v", what, want)
	}
	waitFor("at the start")
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", pair.Server.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	ip("link", "add", "lgw0", "type", "veth", "peer", "name", "lgw1")
	waitFor("after adding a veth pair")
	ip("link", "del", "lgw0")
	waitFor("after deleting it")
	if _, err := w.Snapshot(); err != nil {
		t.Errorf("the reader failed: %v", err)
	}
}
