package watch

import (
	"testing"
	"time"
)

// TestNextPause: the reader's pause lengthens while the rings stay nearly
// empty, shortens when one fills past a quarter, and under a steady rate
// settles where a ring still has room for four times that rate.
func TestNextPause(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		pause time.Duration
		fill  float64
		want  time.Duration
	}{
		{10 * ms, 0, 20 * ms},
		{160 * ms, 0.01, maxPause},
		{maxPause, 0, maxPause},
		{maxPause, 0.3, 100 * ms},
		{minPause, 0.9, minPause},
		{50 * ms, 0.1, 50 * ms},
		{50 * ms, 1.0 / 16, 50 * ms},
		{50 * ms, 1.0 / 4, 50 * ms},
	} {
		if got := nextPause(tt.pause, tt.fill); got != tt.want {
			t.Errorf("nextPause(%v, %.3f) = %v; want %v", tt.pause, tt.fill, got, tt.want)
		}
	}
	// A steady rate, in rings a second: from either end, the pause
	// settles where a ring holds at most a quarter (or at minPause).
	for _, rate := range []float64{0.01, 0.5, 2, 10, 50, 1000} {
		for _, start := range []time.Duration{minPause, maxPause} {
			pause := start
			for range 20 {
				pause = nextPause(pause, rate*pause.Seconds())
			}
			if fill := rate * pause.Seconds(); fill > 1.0/4 && pause != minPause {
				t.Errorf("%v rings/s from %v: settled at %v, a ring %.2f full", rate, start, pause, fill)
			}
			if fill := rate * pause.Seconds(); fill < 1.0/16 && pause != maxPause {
				t.Errorf("%v rings/s from %v: settled at %v, a ring only %.3f full", rate, start, pause, fill)
			}
		}
	}
}
