package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestPrintVersion: the line names the module version, the revision cut to
// 12 characters with +dirty for a modified tree, the commit time, and Go.
func TestPrintVersion(t *testing.T) {
	for _, c := range []struct {
		name     string
		version  string
		settings map[string]string
		want     string
	}{
		{"go run", "(devel)", nil, "linger (devel) go1.26.8\n"},
		{"tagged", "v0.1.0", nil, "linger v0.1.0 go1.26.8\n"},
		{"clone", "(devel)", map[string]string{"vcs.revision": "becd39a2470037790c67fc1c8a5b01594ed59781", "vcs.time": "2026-12-07T08:16:11Z", "vcs.modified": "false"},
			"linger (devel) rev becd39a24700 2026-12-07T08:16:11Z go1.26.8\n"},
		{"dirty", "(devel)", map[string]string{"vcs.revision": "becd39a2470037790c67fc1c8a5b01594ed59781", "vcs.modified": "true"},
			"linger (devel) rev becd39a24700+dirty go1.26.8\n"},
	} {
		bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/linger-go/linger", Version: c.version}}
		for k, v := range c.settings {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: k, Value: v})
		}
		var b strings.Builder
		printVersion(&b, bi)
		if b.String() != c.want {
			t.Errorf("%s: %q, want %q", c.name, b.String(), c.want)
		}
	}
}
