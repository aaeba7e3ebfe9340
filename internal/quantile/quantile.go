// Package quantile reads percentiles off sorted samples, one way for every
// figure linger prints: the nearest rank, so that a p99 of 100 samples is
// the 99th and never quietly the maximum.
package quantile

import (
	"cmp"
	"math"
)

// NearestRank returns the q-quantile (0 < q <= 1) of sorted, which must be
// in ascending order: the smallest sample that at least a q share of the
// samples do not exceed. It returns the zero value for no samples.
func NearestRank[T cmp.Ordered](sorted []T, q float64) T {
	if len(sorted) == 0 {
		var zero T
		return zero
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
