//go:build linux

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// child is a helper process: this same binary re-run as a hidden bench
// subcommand. It is told what to do by its flags and lines on its stdin, and
// answers with lines on its stdout.
type child struct {
	name string // the hidden subcommand, for errors
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
}

// startChild runs self with args. The child dies with ctx (exec kills it),
// with this process (PR_SET_PDEATHSIG), and exits by itself when its stdin
// closes, so no child outlives the benchmark whichever way it ends.
func startChild(ctx context.Context, self []string, args ...string) (*child, error) {
	cmd := exec.CommandContext(ctx, self[0], append(append([]string(nil), self[1:]...), args...)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return &child{name: args[0], cmd: cmd, in: in, out: sc}, nil
}

// line returns the child's next line of output.
func (c *child) line() (string, error) {
	if c.out.Scan() {
		return c.out.Text(), nil
	}
	if err := c.out.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("child %q exited early", c.name)
}

// expect reads lines until one starts with prefix and returns the rest.
func (c *child) expect(prefix string) (string, error) {
	for {
		l, err := c.line()
		if err != nil {
			return "", err
		}
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			return strings.TrimSpace(rest), nil
		}
	}
}

func (c *child) send(s string) error {
	_, err := io.WriteString(c.in, s+"\n")
	return err
}

// stop closes the child's stdin, which tells it to finish, and kills it if
// it has not exited within a few seconds.
func (c *child) stop() error {
	c.in.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		return <-done
	}
}

// exitOnStdinEOF makes a child exit when its parent goes away or tells it
// to stop; lines on stdin are passed to cmds until then.
func exitOnStdinEOF(cmds chan<- string) {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if cmds != nil {
			cmds <- sc.Text()
		}
	}
	if cmds != nil {
		close(cmds)
		return
	}
	os.Exit(0)
}

// mem is the process's memory as the benchmarks count it.
type mem struct {
	Heap   uint64 // live heap objects after a full GC
	Stacks uint64 // goroutine stacks
	RSS    uint64
}

// measureMem collects garbage, returns freed pages to the system so that
// RSS counts what is live, and reads the counters.
func measureMem() mem {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return mem{Heap: ms.HeapAlloc, Stacks: ms.StackInuse, RSS: rss()}
}

func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// monoNow is CLOCK_MONOTONIC in nanoseconds: the same clock in every
// process on the machine, so a child's timestamps compare with ours.
func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
