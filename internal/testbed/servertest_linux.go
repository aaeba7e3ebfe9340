package testbed

import (
	"errors"
	"testing"
)

// RunRealServer starts a real server for t with StartRealServer (in a
// fresh t.TempDir when cfg.Dir is empty), skips t when its program is not
// installed, and stops the server when t ends, failing t if it had died.
func RunRealServer(t testing.TB, cfg RealServerConfig) *RealServer {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, stop, err := StartRealServer(cfg)
	if errors.Is(err, ErrNoBinary) {
		t.Skipf("skipping %s: %v (./test.sh installs it as root)", cfg.Kind, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stopping %s: %v", cfg.Kind, err)
		}
	})
	return s
}

// CaptureServerRSTs counts the RSTs a server sends from port until the
// returned function, which stops the capture and returns the counts by
// the client's port. With do nil the server is on loopback; otherwise do
// runs its function in the server's network namespace (netns.Namespace.Do)
// and the capture watches every interface there.
func CaptureServerRSTs(t testing.TB, do func(func() error) error, port int) func() map[int]int {
	t.Helper()
	var c *RSTCapture
	var err error
	if do != nil {
		err = do(func() error {
			c, err = CaptureRSTs("", port)
			return err
		})
	} else {
		c, err = CaptureRSTs("lo", port)
	}
	if err != nil {
		t.Fatal(err)
	}
	return func() map[int]int {
		m := c.RSTs()
		if err := c.Close(); err != nil {
			t.Errorf("capture: %v", err)
		}
		return m
	}
}
