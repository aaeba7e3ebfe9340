//go:build !unix

package alert_test

import "time"

// processCPU is not measured here; the benchmarks then report wall-clock
// time only.
func processCPU() (time.Duration, bool) { return 0, false }
