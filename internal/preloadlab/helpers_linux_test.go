package preloadlab

import (
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	testbed.StartPoller()
	goleak.VerifyTestMain(m)
}

// checkFDs fails t if this process has more descriptors open when t ends
// than when it began.
func checkFDs(t *testing.T) {
	before := proc.OpenFDs()
	t.Cleanup(func() { testbed.WaitFDs(t, before) })
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
