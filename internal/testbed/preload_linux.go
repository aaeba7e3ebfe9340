package testbed

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

var preloadLib struct {
	once sync.Once
	path string
	err  error
}

// LibLinger returns the path of liblinger.so: $LINGER_PRELOAD_LIB if set,
// else the repository's preload/ built once per test binary with make. It
// skips t when there is no preload/ in this tree or it does not build.
func LibLinger(t interface {
	Helper()
	Skipf(format string, args ...any)
}) string {
	t.Helper()
	preloadLib.once.Do(func() {
		if p := os.Getenv("LINGER_PRELOAD_LIB"); p != "" {
			preloadLib.path, preloadLib.err = filepath.Abs(p)
			return
		}
		_, file, _, _ := runtime.Caller(0)
		dir := filepath.Join(filepath.Dir(file), "..", "..", "preload")
		if _, err := os.Stat(filepath.Join(dir, "Makefile")); err != nil {
			preloadLib.err = errors.New("no preload/Makefile in this tree")
			return
		}
		if out, err := exec.Command("make", "-s", "-C", dir, "build/liblinger.so").CombinedOutput(); err != nil {
			preloadLib.err = fmt.Errorf("make -C %s: %w: %s", dir, err, out)
			return
		}
		preloadLib.path = filepath.Join(dir, "build", "liblinger.so")
	})
	if preloadLib.err != nil {
		t.Skipf("skipping the preloaded server: %v", preloadLib.err)
	}
	return preloadLib.path
}

// PreloadEnv is the environment (RealServerConfig.Env) that runs a server
// under liblinger.so with its per-connection log in dir/linger.log, and
// extra LINGER_* settings.
func PreloadEnv(t interface {
	Helper()
	Skipf(format string, args ...any)
}, dir string, extra ...string) []string {
	t.Helper()
	return append([]string{"LD_PRELOAD=" + LibLinger(t), "LINGER_LOG=" + filepath.Join(dir, "linger.log")}, extra...)
}

// PreloadOutcomes counts the connections the library says it released, by
// outcome, from the log PreloadEnv asks for: its line per
// connection, or, with LINGER_LOG_SUMMARY, the last summary line of each
// process ("?" counts lines it cannot read).
func PreloadOutcomes(dir string) map[string]int {
	m := map[string]int{}
	f, err := os.Open(filepath.Join(dir, "linger.log"))
	if err != nil {
		return m
	}
	defer f.Close()
	summaries := map[int]map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l struct {
			PID      int            `json:"pid"`
			Outcome  string         `json:"outcome"`
			Outcomes map[string]int `json:"outcomes"`
		}
		switch {
		case json.Unmarshal(sc.Bytes(), &l) != nil:
			m["?"]++
		case l.Outcomes != nil:
			summaries[l.PID] = l.Outcomes
		case l.Outcome != "":
			m[l.Outcome]++
		default:
			m["?"]++
		}
	}
	for _, s := range summaries {
		for k, v := range s {
			m[k] += v
		}
	}
	return m
}
