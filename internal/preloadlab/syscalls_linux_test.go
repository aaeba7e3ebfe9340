package preloadlab

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
)

// The system calls of docs/preload-servers.md come from
//
//	go test ./internal/preloadlab -run TestCloseSyscalls -v -args -syscalls
//
// as root, with nginx, wrk and strace installed.
var syscallsFlag = flag.Bool("syscalls", false, "TestCloseSyscalls: count nginx's system calls a connection, stock and preloaded")

// TestCloseSyscalls attaches strace -f -c to a stock and to a preloaded
// nginx in turn while wrk (4 connections, "Connection: close", 2 s) runs
// against it, and prints each one's system calls per connection (per
// accept4) and the difference. strace slows nginx several times over,
// which changes when wrk's side of a connection ends against nginx's
// close: the counts say which calls the library makes on each path, not
// how often each path is taken without strace.
func TestCloseSyscalls(t *testing.T) {
	if !*syscallsFlag {
		t.Skip("a measurement for docs/preload-servers.md; run with -args -syscalls")
	}
	testbed.RequireRoot(t, "nginx as root, traced")
	for _, tool := range []string{"wrk", "strace"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	ca := testbed.SharedPKI(t)
	files, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	perConn := map[string]map[string]float64{}
	for _, name := range []string{"stock", "preloaded"} {
		cfg := testbed.RealServerConfig{Kind: "nginx", Files: files, Host: "127.0.0.1"}
		if name == "preloaded" {
			cfg.Dir = t.TempDir()
			cfg.Env = testbed.PreloadEnv(t, cfg.Dir, "LINGER_LOG_SUMMARY=1")
		}
		srv := testbed.RunRealServer(t, cfg)
		out := filepath.Join(t.TempDir(), "strace")
		st := exec.Command("strace", "-f", "-c", "-o", out, "-p", strconv.Itoa(srv.PID))
		if err := st.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // attached
		w, err := exec.Command("wrk", "-t1", "-c4", "-d2s", "-H", "Connection: close", "https://"+srv.Addr+"/").CombinedOutput()
		if err != nil {
			st.Process.Kill()
			st.Wait()
			t.Fatalf("wrk: %v\n%s", err, w)
		}
		// Past the idle timeout (2 s), so that every lingering
		// connection has ended and its calls are counted.
		time.Sleep(2500 * time.Millisecond)
		// strace detaches, writes its table and ends by the signal.
		st.Process.Signal(syscall.SIGINT)
		werr := st.Wait()
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatalf("strace: %v, %v", werr, err)
		}
		calls := testbed.StraceCalls(data)
		if calls["accept4"] == 0 {
			t.Fatalf("%s nginx accepted nothing under strace (%v):\n%s", name, werr, data)
		}
		perConn[name] = map[string]float64{}
		for call, n := range calls {
			perConn[name][call] = float64(n) / float64(calls["accept4"])
		}
		t.Logf("%s nginx: %d connections", name, calls["accept4"])
	}
	var names []string
	for call := range perConn["preloaded"] {
		names = append(names, call)
	}
	for call := range perConn["stock"] {
		if _, ok := perConn["preloaded"][call]; !ok {
			names = append(names, call)
		}
	}
	slices.Sort(names)
	fmt.Println("\n| system call | stock, per connection | preloaded | added |")
	fmt.Println("| --- | --- | --- | --- |")
	for _, call := range names {
		s, p := perConn["stock"][call], perConn["preloaded"][call]
		if s >= 0.005 || p >= 0.005 {
			fmt.Printf("| %s | %.2f | %.2f | %+.2f |\n", call, s, p, p-s)
		}
	}
}
