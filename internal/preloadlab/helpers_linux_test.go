package preloadlab

import (
	"testing"

	"github.com/linger-go/linger/internal/testbed"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	testbed.StartPoller()
	goleak.VerifyTestMain(m)
}
