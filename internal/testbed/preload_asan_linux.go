package testbed

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

var preloadASan struct {
	once    sync.Once
	preload string
	err     error
}

// PreloadASan returns the LD_PRELOAD value that runs a program under the
// sanitizer build of liblinger (preload/build/liblinger-asan.so,
// -fsanitize=address,undefined), built once per test binary with make. The
// ASan runtime must be the first library loaded (ASan refuses to run
// otherwise), so the value names it first, as `cc -print-file-name=libasan.so`
// finds it (symbolic links resolved). It skips t when preload/ does not build
// or the compiler has no ASan runtime.
func PreloadASan(t interface {
	Helper()
	Skipf(format string, args ...any)
}) string {
	t.Helper()
	lib := LibLinger(t) // the same tree, built the same way
	preloadASan.once.Do(func() {
		dir := filepath.Dir(filepath.Dir(lib))
		if out, err := exec.Command("make", "-s", "-C", dir, "build/liblinger-asan.so").CombinedOutput(); err != nil {
			preloadASan.err = fmt.Errorf("make -C %s build/liblinger-asan.so: %w: %s", dir, err, out)
			return
		}
		out, err := exec.Command("cc", "-print-file-name=libasan.so").Output()
		asan := string(bytes.TrimSpace(out))
		if err != nil || !strings.HasPrefix(asan, "/") {
			preloadASan.err = fmt.Errorf("the C compiler has no libasan.so (%v)", err)
			return
		}
		if real, err := filepath.EvalSymlinks(asan); err == nil {
			asan = real
		}
		preloadASan.preload = asan + " " + filepath.Join(dir, "build", "liblinger-asan.so")
	})
	if preloadASan.err != nil {
		t.Skipf("skipping the sanitizer build: %v", preloadASan.err)
	}
	return preloadASan.preload
}
