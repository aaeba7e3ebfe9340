//go:build linux

package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/proc"
	"golang.org/x/sys/unix"
)

// wrk 4.1's summary with --latency, and one with errors.
const wrkOut = `Running 1s test @ https://127.0.0.1:18099/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.50ms  522.06us   5.85ms   71.63%
    Req/Sec     1.29k   137.40     1.54k    72.73%
  Latency Distribution
     50%  980.00us
     75%    1.76ms
     90%    2.16ms
     99%    2.94ms
  1407 requests in 1.10s, 2.50MB read
Requests/sec:   1278.82
Transfer/sec:      2.27MB
`

const wrkErrOut = wrkOut + `  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
`

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  string
		want HappyResult
		bad  bool
	}{
		{"clean", wrkOut, HappyResult{Requests: 1407, PerSec: 1278.82, P50: 980 * time.Microsecond, P99: 2940 * time.Microsecond}, false},
		{"errors", wrkErrOut, HappyResult{Requests: 1407, PerSec: 1278.82, P50: 980 * time.Microsecond, P99: 2940 * time.Microsecond, Errors: 10}, false},
		{"no summary", "unable to connect to 127.0.0.1:1 Connection refused\n", HappyResult{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r HappyResult
			err := parseWrk(&r, []byte(tc.out))
			if (err != nil) != tc.bad {
				t.Fatalf("err = %v, want an error: %v", err, tc.bad)
			}
			if !tc.bad && (r.Requests != tc.want.Requests || r.PerSec != tc.want.PerSec || r.P50 != tc.want.P50 || r.P99 != tc.want.P99 || r.Errors != tc.want.Errors) {
				t.Errorf("got %+v, want %+v", r, tc.want)
			}
		})
	}
}

func TestParseH2load(t *testing.T) {
	out := `finished in 1.00s, 37109.00 req/s, 40.12MB/s
requests: 100 total, 100 started, 100 done, 97 succeeded, 2 failed, 1 errored, 0 timeout
status codes: 96 2xx, 0 3xx, 1 4xx, 0 5xx
`
	log := filepath.Join(t.TempDir(), "log")
	var lines []byte
	for i := 1; i <= 100; i++ { // latencies 1..100 ms, one failed stream
		status := "200"
		if i == 100 {
			status = "-1"
		}
		lines = append(lines, []byte("1700000000000000\t"+status+"\t"+strconv.Itoa(i*1000)+"\n")...)
	}
	if err := os.WriteFile(log, lines, 0o644); err != nil {
		t.Fatal(err)
	}
	var r HappyResult
	if err := parseH2load(&r, []byte(out), log); err != nil {
		t.Fatal(err)
	}
	if r.PerSec != 37109 || r.Requests != 97 || r.Errors != 4 {
		t.Errorf("got %v req/s, %d requests, %d errors; want 37109, 97, 4 (2 failed, 1 errored, 1 4xx)", r.PerSec, r.Requests, r.Errors)
	}
	// 99 successful latencies, 1..99 ms: the median is the 50th, p99 the 99th.
	if r.P50 != 50*time.Millisecond || r.P99 != 99*time.Millisecond {
		t.Errorf("p50 %v, p99 %v; want 50ms, 99ms", r.P50, r.P99)
	}
}

// TestPinProcess: -happy-pin moves every thread of the process, not only
// the calling one, and gives each its mask back.
func TestPinProcess(t *testing.T) {
	server, client, err := happyCPUs()
	if err != nil {
		t.Skipf("cannot split the CPUs: %v", err)
	}
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal(err)
	}
	masks := func() map[int]unix.CPUSet {
		m := map[int]unix.CPUSet{}
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			var s unix.CPUSet
			if unix.SchedGetaffinity(tid, &s) == nil {
				m[tid] = s
			}
		}
		return m
	}
	restore, err := pinProcess(server)
	if err != nil {
		t.Fatal(err)
	}
	pinned := masks()
	restore()
	for tid, s := range pinned {
		if s != server || s.IsSet(client) {
			t.Errorf("thread %d: mask %v while pinned, want %v, without CPU %d", tid, s, server, client)
		}
	}
	if len(pinned) < 2 {
		t.Errorf("%d threads seen: the test process should have several", len(pinned))
	}
	for tid, s := range masks() {
		if s != before {
			t.Errorf("thread %d: mask %v after restore, want %v", tid, s, before)
		}
	}
}

// TestHappyServer: the happy path's server answers a real TLS client in
// both modes, the lingering one's connection goes through the Closer, and
// nothing is left open.
func TestHappyServer(t *testing.T) {
	p, err := pki.NewPKI()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"plain", "linger"} {
		t.Run(mode, func(t *testing.T) {
			fds := proc.OpenFDs()
			srv, ln, lc, done, err := startHappyServer(p, mode, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if (lc != nil) != (mode == "linger") {
				t.Fatalf("Closer %v in mode %s", lc, mode)
			}
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.CAPool}}
			req, _ := http.NewRequest("GET", "https://"+ln.Addr().String()+"/", nil)
			req.Close = true // Connection: close: the server closes, and lingers
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			tr.CloseIdleConnections()
			if err != nil || !bytes.Equal(body, happyBody) {
				t.Errorf("body %q, %v; want happyBody", body, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			<-done
			if lc != nil {
				// The server's goroutine closes the connection after the
				// response: wait for it to reach the Closer.
				var n uint64
				for deadline := time.Now().Add(5 * time.Second); n == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					n = 0
					for _, c := range lc.Stats().Outcomes {
						n += c
					}
					n += uint64(lc.Stats().Lingering)
				}
				if err := lc.Shutdown(ctx); err != nil {
					t.Error(err)
				}
				if n != 1 {
					t.Errorf("%d connections through the Closer, want 1", n)
				}
			}
			for deadline := time.Now().Add(5 * time.Second); proc.OpenFDs() > fds && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			}
			if got := proc.OpenFDs(); got > fds {
				t.Errorf("%d descriptors open after, %d before", got, fds)
			}
		})
	}
}

func TestRunHappyServerBadMode(t *testing.T) {
	if err := runHappyServer([]string{"-mode", "lingr"}); !errors.Is(err, ErrUsage) {
		t.Errorf("error %v, want one matching ErrUsage", err)
	}
}
