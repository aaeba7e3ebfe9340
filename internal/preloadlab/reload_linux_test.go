package preloadlab

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/testbed"
)

// lingerConns is how many connections the reload test leaves lingering.
const lingerConns = 12

// TestReloadWhileLingering: a fork-heavy server under liblinger.so (nginx,
// a master and three workers; Apache's event MPM, a parent and its
// children) reloads (SIGHUP, as `nginx -s reload` sends; SIGUSR1, as
// `apachectl graceful` sends) while connections linger in its workers.
// The server must keep answering, its workers must own the lingering
// sockets (the library's thread runs in each forked child) and the new
// ones none (nothing inherited), the old workers must exit in spite of
// the library's thread, and afterwards no process may own a socket of
// those connections. The connections whose clients close before the
// reload end without a reset. Those still lingering when their worker
// exits end as a plain close ends: the kernel resets them when the
// client's close_notify arrives; that is counted and reported.
func TestReloadWhileLingering(t *testing.T) {
	testbed.RequireRoot(t, "the reload test (packet capture on loopback, ss -p)")
	testbed.CheckFDs(t)
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("skipping the reload test: ss (iproute2) is not installed")
	}
	for _, kind := range []struct {
		name   string
		signal syscall.Signal
	}{{"nginx", syscall.SIGHUP}, {"apache", syscall.SIGUSR1}} {
		t.Run(kind.name, func(t *testing.T) { testReload(t, kind.name, kind.signal) })
	}
}

func testReload(t *testing.T, kind string, reload syscall.Signal) {
	ca := testbed.SharedPKI(t)
	dir := t.TempDir()
	files, err := ca.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A long idle bound, so that the sockets are still lingering when
	// the server reloads.
	env := testbed.PreloadEnv(t, dir, "LINGER_IDLE_TIMEOUT=30s")
	s := testbed.RunRealServer(t, testbed.RealServerConfig{Kind: kind, Files: files, Dir: dir, Host: "127.0.0.1",
		Version: tls.VersionTLS13, Workers: 3, Env: env})
	_, portText, _ := net.SplitHostPort(s.Addr)
	port, _ := strconv.Atoi(portText)
	capture, err := testbed.CaptureRSTs("lo", port)
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Close()
	cfg := ca.ClientConfig(nil, tls.VersionTLS13)

	// Each connection gets its answer and the server's FIN, and stays
	// open: the server's side lingers, waiting for ours.
	var conns []*tls.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < lingerConns; i++ {
		c, status, err := request(s.Addr, cfg)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if status == "" {
			t.Fatalf("connection %d: no answer", i)
		}
		conns = append(conns, c)
	}
	ports := map[int]bool{}
	for _, c := range conns {
		ports[c.LocalAddr().(*net.TCPAddr).Port] = true
	}
	before := waitOwners(t, port, ports, func(o owners) bool { return o.owned == lingerConns })
	workers := before.byPID
	t.Logf("%s: %d connections lingering, owned by %v (master %d)", s.Version, before.owned, workers, s.PID)
	if _, ok := workers[s.PID]; ok {
		t.Errorf("the master process %d owns lingering sockets: %v", s.PID, workers)
	}

	// Half the clients close now: the library reads their
	// close_notify and FIN and releases the socket.
	early := map[int]bool{}
	for _, c := range conns[:lingerConns/2] {
		early[c.LocalAddr().(*net.TCPAddr).Port] = true
		c.Close()
	}
	conns = conns[lingerConns/2:]
	waitOwners(t, port, ports, func(o owners) bool { return o.owned == lingerConns-len(early) })
	if err := syscall.Kill(s.PID, reload); err != nil {
		t.Fatal(err)
	}
	// The old workers exit (their sockets go with them) and the new
	// ones answer.
	after := waitOwners(t, port, ports, func(o owners) bool {
		for pid := range workers {
			if alive(pid) {
				return false
			}
		}
		return o.owned == 0
	})
	if after.owned != 0 {
		t.Errorf("after the reload %d lingering sockets still have an owner: %v", after.owned, after.byPID)
	}
	for pid := range workers {
		if alive(pid) {
			t.Errorf("old worker %d still runs after the reload", pid)
		}
	}
	c, status, err := request(s.Addr, cfg)
	if err != nil || status == "" {
		t.Fatalf("after the reload: status %q, error %v", status, err)
	}
	c.Close()
	if !alive(s.PID) {
		t.Fatalf("the master %d died in the reload", s.PID)
	}
	// The new workers inherited none of the old sockets.
	o := listOwners(t, port, ports)
	if o.owned != 0 {
		t.Errorf("new workers own %d of the old sockets: %v", o.owned, o.byPID)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	time.Sleep(200 * time.Millisecond)
	earlyResets, lateResets := 0, 0
	for p := range capture.RSTs() {
		switch {
		case early[p]:
			earlyResets++
		case ports[p]:
			lateResets++
		}
	}
	if earlyResets != 0 {
		t.Errorf("%d of %d connections closed by their client while lingering were reset", earlyResets, len(early))
	}
	t.Logf("connections still lingering when their worker exited: %d of %d reset at the client's close (the kernel's answer to bytes for a closed socket)",
		lateResets, lingerConns-len(early))
	if b, _ := os.ReadFile(dir + "/error.log"); strings.Contains(string(b), "signal") {
		t.Errorf("the error log mentions a signal:\n%s", b)
	}
	t.Logf("liblinger.so's log: %s", testbed.CountsText(testbed.PreloadOutcomes(dir)))
}

// request sends one GET with Connection: close and reads the answer,
// leaving the connection open.
func request(addr string, cfg *tls.Config) (*tls.Conn, string, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, "", err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		c.Close()
		return nil, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c, resp.Status, nil
}

// owners are the processes that hold the server's sides of some
// connections.
type owners struct {
	owned int         // sockets with at least one owner
	byPID map[int]int // sockets each process holds
}

var ssUser = regexp.MustCompile(`pid=(\d+)`)

// listOwners asks ss which processes hold the server's side of each
// connection from one of ports to the server's port.
func listOwners(t *testing.T, port int, ports map[int]bool) owners {
	t.Helper()
	out, err := exec.Command("ss", "-tanpH", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	o := owners{byPID: map[int]int{}}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		_, peer, _ := net.SplitHostPort(f[4])
		if p, _ := strconv.Atoi(peer); !ports[p] {
			continue
		}
		seen := map[int]bool{}
		for _, m := range ssUser.FindAllStringSubmatch(line, -1) {
			pid, _ := strconv.Atoi(m[1])
			if !seen[pid] {
				seen[pid] = true
				o.byPID[pid]++
			}
		}
		if len(seen) > 0 {
			o.owned++
		}
	}
	return o
}

// waitOwners polls listOwners for up to 15 s until done holds, and returns
// the last answer.
func waitOwners(t *testing.T, port int, ports map[int]bool, done func(owners) bool) owners {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		o := listOwners(t, port, ports)
		if done(o) || time.Now().After(deadline) {
			return o
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// alive says whether pid runs (and is not a zombie waiting for its parent).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
