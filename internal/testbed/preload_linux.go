package testbed

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
)

// PreloadTB is the part of testing.TB that BuildPreload needs.
type PreloadTB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// PreloadDir is the repository's preload directory, where liblinger's C
// sources and Makefile are.
func PreloadDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "preload")
}

var preloadBuild struct {
	sync.Mutex
	done bool
	err  error
	out  []byte
}

// BuildPreload builds liblinger with `make -C preload`, once per test
// binary, and returns the absolute path of preload/build/liblinger.so, or
// of preload/build/liblinger-asan.so (-fsanitize=address,undefined) if
// sanitize is set; LD_PRELOAD needs PreloadEnv's value for the latter. It
// skips t if make or a C compiler is missing. Test binaries of several
// packages may build at once: an flock on preload/build.lock makes them
// take turns, and make leaves an up-to-date build alone.
func BuildPreload(t PreloadTB, sanitize bool) string {
	t.Helper()
	for _, tool := range []string{"make", "cc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: liblinger needs %s to build (apt-get install build-essential)", tool)
		}
	}
	dir := PreloadDir()
	preloadBuild.Lock()
	defer preloadBuild.Unlock()
	if !preloadBuild.done {
		preloadBuild.done = true
		preloadBuild.out, preloadBuild.err = buildLocked(dir)
	}
	if preloadBuild.err != nil {
		t.Fatalf("make -C %s: %v\n%s", dir, preloadBuild.err, preloadBuild.out)
	}
	name := "liblinger.so"
	if sanitize {
		name = "liblinger-asan.so"
	}
	lib, err := filepath.Abs(filepath.Join(dir, "build", name))
	if err != nil {
		t.Fatalf("%v", err)
	}
	return lib
}

func buildLocked(dir string) ([]byte, error) {
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	return exec.Command("make", "-s", "-C", dir).CombinedOutput()
}

// PreloadEnv returns the LD_PRELOAD value that loads lib. For the
// sanitizer build, the ASan runtime must be the first library loaded
// (ASan refuses to run otherwise), so it comes first, as
// `cc -print-file-name=libasan.so` names it; t is skipped if the compiler
// has none.
func PreloadEnv(t PreloadTB, lib string, sanitize bool) string {
	t.Helper()
	if !sanitize {
		return lib
	}
	out, err := exec.Command("cc", "-print-file-name=libasan.so").Output()
	asan := string(bytes.TrimSpace(out))
	if err != nil || !strings.HasPrefix(asan, "/") {
		t.Skipf("skipping the sanitizer build: the C compiler has no libasan.so (%v)", err)
	}
	return asan + " " + lib
}
