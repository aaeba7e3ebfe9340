package testbed

import (
	"fmt"
	"math"
	"sort"
	"strconv"
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

// MeanInterval returns the mean of v and the half-width of its 95 %
// interval (two standard errors; 0 for fewer than two values): what the
// overhead measurements print beside the median of their pairs' ratios.
func MeanInterval(v []float64) (mean, half float64) {
	if len(v) == 0 {
		return 0, 0
	}
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	if len(v) > 1 {
		half = 2 * math.Sqrt(ss/float64(len(v)-1)/float64(len(v)))
	}
	return mean, half
}

// RatesText lists rates rounded to integers, separated by spaces.
func RatesText(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(s, " ")
}

// StraceCalls reads the table strace -c prints and returns the calls of
// each system call.
func StraceCalls(summary []byte) map[string]int {
	calls := map[string]int{}
	for _, l := range strings.Split(string(summary), "\n") {
		// % time, seconds, usecs/call, calls, [errors,] syscall
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		if n, err := strconv.Atoi(f[3]); err == nil {
			calls[f[len(f)-1]] = n
		}
	}
	return calls
}
