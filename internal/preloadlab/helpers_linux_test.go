package preloadlab

import (
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
