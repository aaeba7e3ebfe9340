package preloadlab

import (
	"errors"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/linger-go/linger/internal/testbed"
)

// countsText lists counts as "a 3, b 1", largest first.
func countsText(m map[string]int) string {
	var ks []string
	for k, v := range m {
		if v > 0 {
			ks = append(ks, k)
		}
	}
	sort.Slice(ks, func(i, j int) bool {
		if m[ks[i]] != m[ks[j]] {
			return m[ks[i]] > m[ks[j]]
		}
		return ks[i] < ks[j]
	})
	var parts []string
	for _, k := range ks {
		parts = append(parts, k+" "+strconv.Itoa(m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// startServer starts a real server for the test, or skips it when its
// program is missing, and stops it when the test ends.
func startServer(t *testing.T, cfg testbed.RealServerConfig) *testbed.RealServer {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, stop, err := testbed.StartRealServer(cfg)
	if errors.Is(err, testbed.ErrNoBinary) {
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
