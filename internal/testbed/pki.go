package testbed

import (
	"sync"

	"github.com/linger-go/linger/internal/pki"
)

var shared struct {
	once sync.Once
	ca   *pki.PKI
	err  error
}

// SharedPKI returns one PKI for the whole process, whose server certificate
// is also valid for a netns.Pair's server address (192.0.2.1): tests that
// each need a PKI share it rather than generate keys again.
func SharedPKI(t interface {
	Helper()
	Fatal(args ...any)
}) *pki.PKI {
	t.Helper()
	shared.once.Do(func() { shared.ca, shared.err = pki.NewPKI("192.0.2.1") })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.ca
}
