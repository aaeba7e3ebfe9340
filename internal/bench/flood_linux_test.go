//go:build linux

package bench

import (
	"math"
	"slices"
	"testing"
	"time"
)

// TestFloodRatios: each mode is compared with the baseline of the same
// round, whatever order the round ran them in, and the median of an even
// number of rounds is the mean of the middle two.
func TestFloodRatios(t *testing.T) {
	res := func(mode string, round int, perSec float64, cpu time.Duration, rejected int64) FloodResult {
		return FloodResult{Clients: "deaf", Mode: mode, Round: round, PerSec: perSec, CPU: cpu, Rejected: rejected}
	}
	rs := []FloodResult{
		res("plain", 1, 100, 100*time.Millisecond, 100),  // 1 ms per reject
		res("linger", 1, 90, 180*time.Millisecond, 90),   // 2 ms
		res("linger", 2, 200, 200*time.Millisecond, 200), // 1 ms
		res("plain", 2, 400, 200*time.Millisecond, 400),  // 0.5 ms
		res("plain", 3, 100, 100*time.Millisecond, 100),
		res("linger", 3, 80, 100*time.Millisecond, 80),
		res("linger", 4, 100, 100*time.Millisecond, 100),
		res("plain", 4, 100, 100*time.Millisecond, 100),
	}
	got := floodRatios(rs, "plain")
	if len(got) != 1 {
		t.Fatalf("%d ratios, want 1: %+v", len(got), got)
	}
	q := got[0]
	if want := []float64{0.9, 0.5, 0.8, 1}; !slices.Equal(q.Rate.All, want) {
		t.Errorf("rate ratios %v, want %v", q.Rate.All, want)
	}
	if math.Abs(q.Rate.Median-0.85) > 1e-9 || q.Rate.Min != 0.5 || q.Rate.Max != 1 {
		t.Errorf("rate spread %+v, want median 0.85 in [0.5, 1]", q.Rate)
	}
	if q.CPU.Median != 1.625 { // of 2, 2, 1.25, 1
		t.Errorf("CPU ratios %v: median %v, want 1.625", q.CPU.All, q.CPU.Median)
	}
	if q.Rounds != 4 || q.Rejected != [2]int64{470, 700} {
		t.Errorf("rounds %d, rejected %v; want 4, [470 700]", q.Rounds, q.Rejected)
	}
}
