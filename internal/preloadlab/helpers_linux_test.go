package preloadlab

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/linger-go/linger/internal/testbed"
)

var libFlag = flag.String("lib", "", "liblinger.so to preload (default: build the repository's preload/ with make)")

var lib struct {
	once sync.Once
	path string
	err  error
}

// liblinger returns the path of liblinger.so, built once per test binary
// with `make -C preload` at the repository's root, or skips t when the
// repository has no preload/ or no C compiler.
func liblinger(t testing.TB) string {
	t.Helper()
	lib.once.Do(func() {
		if *libFlag != "" {
			lib.path, lib.err = filepath.Abs(*libFlag)
			return
		}
		root, err := filepath.Abs("../..")
		if err != nil {
			lib.err = err
			return
		}
		dir := filepath.Join(root, "preload")
		if _, err := os.Stat(filepath.Join(dir, "Makefile")); err != nil {
			lib.err = errors.New("no preload/Makefile in this tree")
			return
		}
		if out, err := exec.Command("make", "-s", "-C", dir).CombinedOutput(); err != nil {
			lib.err = errors.New("make -C preload: " + err.Error() + ": " + string(out))
			return
		}
		lib.path = filepath.Join(dir, "build", "liblinger.so")
	})
	if lib.err != nil {
		t.Skipf("skipping the preloaded servers: %v", lib.err)
	}
	return lib.path
}

// preloadEnv is the environment that runs a server under liblinger.so, its
// per-connection log in dir/linger.log, and extra LINGER_* settings.
func preloadEnv(t testing.TB, dir string, extra ...string) []string {
	return append([]string{"LD_PRELOAD=" + liblinger(t), "LINGER_LOG=" + filepath.Join(dir, "linger.log")}, extra...)
}

// outcomes counts the library's log lines by outcome, "?" for a line
// without one: what the library says it did with each connection.
func outcomes(dir string) map[string]int {
	m := map[string]int{}
	f, err := os.Open(filepath.Join(dir, "linger.log"))
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l struct {
			Outcome string `json:"outcome"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Outcome == "" {
			l.Outcome = "?"
		}
		m[l.Outcome]++
	}
	return m
}

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
