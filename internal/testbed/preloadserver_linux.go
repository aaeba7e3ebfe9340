package testbed

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
)

// ServerPreloadEnv is the environment (RealServerConfig.Env) that runs a
// server under liblinger.so, built by BuildPreload, with its log in
// dir/linger.log (a JSON line per connection) and extra LINGER_* settings.
func ServerPreloadEnv(t PreloadTB, dir string, extra ...string) []string {
	t.Helper()
	lib := BuildPreload(t, false)
	return append([]string{"LD_PRELOAD=" + PreloadEnv(t, lib, false), "LINGER_LOG=" + filepath.Join(dir, "linger.log")}, extra...)
}

// PreloadOutcomes counts the connections the library says it released, by
// outcome, from the log ServerPreloadEnv asks for: its line per
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
