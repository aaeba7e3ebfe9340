package testbed

import (
	"fmt"
	"sort"
	"strings"
)

// CountsText lists the counts of m that are not zero, most frequent first
// (ties by name), as "peer_closed 20, peer_reset 1": a table cell for
// outcomes, first errors and the like. It is "" when there are none.
func CountsText(m map[string]int) string {
	var names []string
	for k, v := range m {
		if v > 0 {
			names = append(names, k)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, m[n]))
	}
	return strings.Join(parts, ", ")
}
