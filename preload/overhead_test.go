//go:build linux

package preload_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
)

// buildC compiles one of testdata's C programs into the test's temporary
// directory.
func buildC(t *testing.T, name string) string {
	t.Helper()
	testbed.LibLinger(t) // skips if there is no compiler to build the library
	bin := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", bin,
		filepath.Join("testdata", name+".c")).CombinedOutput(); err != nil {
		t.Fatalf("cc testdata/%s.c: %v\n%s", name, err, out)
	}
	return bin
}

// syscalls runs the program under strace -f -c and returns the calls it
// counted, by system call.
func syscalls(t *testing.T, preload string, args ...string) map[string]int {
	t.Helper()
	out := filepath.Join(t.TempDir(), "strace")
	cmd := exec.Command("strace", append([]string{"-f", "-c", "-o", out}, args...)...)
	cmd.Env = os.Environ()
	if preload != "" {
		cmd.Env = append(cmd.Env, "LD_PRELOAD="+preload)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("strace %v: %v\n%s", args, err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return testbed.StraceCalls(data)
}

// TestCloseOverhead measures what the library adds to a close(2) of a
// regular file and of a pipe, which it must leave alone: the system calls
// it adds per close (strace -c, the difference between 2000 and 1000
// closes, so that the library's start-up calls cancel), which must be
// none (under 0.01), and the nanoseconds it adds (closebench, stock and preloaded
// alternately in the same run, fastest of 3x40 rounds of 1000 each), which must be
// small. go test -run TestCloseOverhead -v ./preload/ prints the table.
func TestCloseOverhead(t *testing.T) {
	lib := testbed.LibLinger(t)
	bench := buildC(t, "closebench")
	kinds := []string{"file", "pipe"}
	if _, err := exec.LookPath("strace"); err != nil {
		t.Logf("strace not installed: system calls per close not counted")
	} else {
		for _, kind := range kinds {
			per := map[string]float64{}
			for _, p := range []string{"", lib} {
				small := syscalls(t, p, bench, kind, "1000", "1")
				large := syscalls(t, p, bench, kind, "2000", "1")
				name := map[bool]string{false: "stock", true: "preloaded"}[p != ""]
				per[name] = float64(large["total"]-small["total"]) / 1000
				if large["close"]-small["close"] != 1000 {
					t.Errorf("%s %s: %d closes more for 1000 more descriptors, want 1000", kind, name, large["close"]-small["close"])
				}
			}
			added := per["preloaded"] - per["stock"]
			t.Logf("%s: system calls per close, with its open: stock %.3f, preloaded %.3f: %.3f added", kind, per["stock"], per["preloaded"], added)
			// Not exactly 0: a run may make one system call more or less
			// than another (malloc growing its heap); one per close would
			// be 1.
			if added > 0.01 || added < -0.01 {
				t.Errorf("%s: the library adds %.3f system calls per close, want 0", kind, added)
			}
		}
	}
	for _, kind := range kinds {
		best := map[bool]float64{}
		for range 3 {
			for _, pre := range []bool{false, true} {
				cmd := exec.Command(bench, kind, "1000", "40")
				cmd.Env = os.Environ()
				if pre {
					cmd.Env = append(cmd.Env, "LD_PRELOAD="+lib)
				}
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("closebench: %v", err)
				}
				var k string
				var lo, med float64
				if _, err := fmt.Sscanf(string(out), "%s min_ns %g median_ns %g", &k, &lo, &med); err != nil {
					t.Fatalf("closebench said %q: %v", out, err)
				}
				if b, ok := best[pre]; !ok || lo < b {
					best[pre] = lo
				}
			}
		}
		t.Logf("%s: ns per close, fastest round: stock %.0f, preloaded %.0f: %.2fx, %+.0f ns (a shared, loaded machine)",
			kind, best[false], best[true], best[true]/best[false], best[true]-best[false])
		// One byte load and a branch; the margin is for the machine's noise.
		if best[true] > 1.5*best[false]+100 {
			t.Errorf("%s: a close costs %.0f ns preloaded against %.0f stock", kind, best[true], best[false])
		}
	}
}

// TestHandoffSyscalls counts the system calls a lingering close adds per
// connection, in the closing thread and the library's together: the test
// server under strace -f -c, stock and preloaded, serving connections one
// at a time from clients that upload 1 MiB and close after the answer.
// go test -run TestHandoffSyscalls -v ./preload/ prints the table.
func TestHandoffSyscalls(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("skipping: strace not installed")
	}
	lib := testbed.LibLinger(t)
	bin := buildServer(t)
	// count runs the test server under strace -f -c, stock (pre "") or
	// preloaded, for n connections from clients c, one at a time, and
	// returns each system call's count per connection.
	count := func(pre string, c client, n int) map[string]float64 {
		out := filepath.Join(t.TempDir(), "strace")
		cmd := exec.Command("strace", "-f", "-c", "-o", out, bin, "close", strconv.Itoa(respSize), strconv.Itoa(reqSize), "1")
		cmd.Env = os.Environ()
		if pre != "" {
			cmd.Env = append(cmd.Env, "LD_PRELOAD="+pre)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var port int
		if _, err := fmt.Fscanf(stdout, "PORT %d\n", &port); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("server under strace: %v", err)
		}
		for range n {
			if r := dial("127.0.0.1", port, c); pre != "" && (r.err != nil || r.got != respSize) {
				t.Errorf("preloaded: read %d bytes, then %v", r.got, r.err)
			}
		}
		time.Sleep(100 * time.Millisecond) // the last peer's FIN reaches the loop
		// SIGTERM to the server, strace's child, which exits; strace then
		// writes its table.
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if f := strings.Fields(string(kids)); len(f) > 0 {
			if pid, err := strconv.Atoi(f[0]); err == nil {
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("strace: %v", err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		per := map[string]float64{}
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 5 {
				continue
			}
			if k, err := strconv.Atoi(f[3]); err == nil {
				per[f[len(f)-1]] = float64(k) / float64(n)
			}
		}
		return per
	}
	per := map[string]map[string]float64{"stock": count("", cooperative, 100), "preloaded": count(lib, cooperative, 100)}
	// The reads, the waits for them (and the loop's pause after each
	// batch of events) and the lock's futex grow with the upload that the
	// loop discards (1 MiB, 256 KiB a read at most) and vary with timing;
	// the rest is the hand-off's own, once per connection.
	drain := map[string]bool{"recvfrom": true, "epoll_wait": true, "clock_nanosleep": true, "futex": true}
	var rows []string
	fixed := 0.0
	for call, v := range per["preloaded"] {
		d := v - per["stock"][call]
		if d >= 0.05 && call != "total" {
			rows = append(rows, fmt.Sprintf("%s %+.2f", call, d))
		}
		if call != "total" && !drain[call] {
			fixed += d
		}
	}
	sort.Strings(rows)
	t.Logf("system calls per connection: stock %.1f, preloaded %.1f: %+.1f, of which %.1f are the hand-off's own and the rest draining (%s)",
		per["stock"]["total"], per["preloaded"]["total"], per["preloaded"]["total"]-per["stock"]["total"], fixed, strings.Join(rows, ", "))
	// close, fcntl, getsockopt, shutdown, epoll_ctl ADD, MOD and DEL, and
	// getpeername for the 2 accepts in 3 that give no usable address: 7.7;
	// with the loop's start (mmap, rt_sigprocmask) shared among the
	// connections, 7.9.
	// The SIOCOUTQ reading (ioctl) is apart: none when the client has
	// acknowledged the answer by the close, one (the hand-off's) when it
	// has not, which depends on timing; the log's second one is not made
	// without LINGER_LOG or LINGER_LOG_SUMMARY, as here. No getpid: the
	// test server never vforks.
	added := func(call string) float64 { return per["preloaded"][call] - per["stock"][call] }
	if f := fixed - added("ioctl"); f > 8.1 {
		t.Errorf("a hand-off adds %.1f system calls besides draining and SIOCOUTQ, want at most 8.1", f)
	}
	if q := added("ioctl"); q > 1.05 {
		t.Errorf("%.2f SIOCOUTQ a connection, want at most 1 (none for the log, which is off)", q)
	}
	if g := added("getpid"); g > 0.1 {
		t.Errorf("%.2f getpid a connection in a process that never vforked, want none", g)
	}
	if p := added("getpeername"); p > 0.7 {
		t.Errorf("%.2f getpeername a connection, want one only for the 2 accepts in 3 without a usable address", p)
	}
	// Clients that read nothing for 300 ms leave most of each answer
	// queued at the close: the hand-off reads SIOCOUTQ, once. The log's
	// reading at the end would be a second; with the log off it is not
	// made.
	stock, pre := count("", slowRead, 8), count(lib, slowRead, 8)
	q := pre["ioctl"] - stock["ioctl"]
	t.Logf("clients that read late: %.2f SIOCOUTQ a connection", q)
	if q < 0.95 || q > 1.05 {
		t.Errorf("clients that read late: %.2f SIOCOUTQ a connection, want 1 (the hand-off's; none for the log, which is off)", q)
	}
}
