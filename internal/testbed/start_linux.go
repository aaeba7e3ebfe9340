package testbed

import "errors"

// StartReal starts a real server for the test, or skips the test when its
// program is not installed, and stops it when the test ends. cfg.Dir is a
// fresh temporary directory of the test's.
func StartReal(t interface {
	Helper()
	TempDir() string
	Skipf(format string, args ...any)
	Fatal(args ...any)
	Cleanup(func())
	Errorf(format string, args ...any)
}, cfg RealServerConfig) *RealServer {
	t.Helper()
	cfg.Dir = t.TempDir()
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
