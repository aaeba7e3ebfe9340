package lingerprom_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
	lingerprom "github.com/linger-go/linger/prometheus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCollector: one connection that lingers until its peer closes, after
// 5 unread bytes, and one that cannot linger (not TCP) show up in the
// counters, the gauge and the histogram, under the constant labels given.
func TestCollector(t *testing.T) {
	before := proc.OpenFDs()
	t.Cleanup(func() { testbed.WaitFDs(t, before) }) // after the defers below
	done := make(chan linger.Report, 2)
	lc, err := linger.New(linger.Config{OnClose: func(r linger.Report) { done <- r }})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Shutdown(context.Background())
	col := lingerprom.NewCollector(lc, prometheus.Labels{"server": "test"})
	if problems, err := testutil.CollectAndLint(col); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lln := lc.Listener(ln)
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := lln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("12345")); err != nil {
		t.Fatal(err)
	}
	server.Close() // lingers until the client closes

	if got := gather(t, col, "linger_lingering_connections").GetMetric()[0].GetGauge().GetValue(); got != 1 {
		t.Errorf("lingering while the client is open = %v, want 1", got)
	}
	io.ReadAll(client) // the FIN
	client.Close()
	p1, p2 := net.Pipe()
	defer p2.Close()
	lc.Close(p1) // not TCP: closed plainly
	for range 2 {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("no report within 10 s")
		}
	}

	const want = `
# HELP linger_connections_total Connections handed to linger and closed, by how they ended.
# TYPE linger_connections_total counter
linger_connections_total{outcome="budget",server="test"} 0
linger_connections_total{outcome="hard_cap",server="test"} 0
linger_connections_total{outcome="idle",server="test"} 0
linger_connections_total{outcome="peer_closed",server="test"} 1
linger_connections_total{outcome="peer_reset",server="test"} 0
linger_connections_total{outcome="plain",server="test"} 1
linger_connections_total{outcome="released",server="test"} 0
linger_connections_total{outcome="shutdown",server="test"} 0
# HELP linger_discarded_bytes_total Bytes read from lingering connections and thrown away.
# TYPE linger_discarded_bytes_total counter
linger_discarded_bytes_total{server="test"} 5
# HELP linger_lingering_connections Connections lingering now.
# TYPE linger_lingering_connections gauge
linger_lingering_connections{server="test"} 0
# HELP linger_undelivered_connections_total Connections whose peer may not have got our last word: bytes of ours unacknowledged when the connection ended, not by the peer closing or resetting it (Linux only).
# TYPE linger_undelivered_connections_total counter
linger_undelivered_connections_total{server="test"} 0
`
	if err := testutil.CollectAndCompare(col, strings.NewReader(want),
		"linger_connections_total", "linger_discarded_bytes_total", "linger_lingering_connections",
		"linger_undelivered_connections_total"); err != nil {
		t.Error(err)
	}

	// The hold times vary; their count does not, and the lingering one was
	// on loopback, well under the 2 s idle timeout.
	h := gather(t, col, "linger_hold_seconds").GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 2 {
		t.Errorf("hold_seconds count = %d, want 2", h.GetSampleCount())
	}
	var le1s uint64
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == 1 {
			le1s = b.GetCumulativeCount()
		}
	}
	if le1s != 2 {
		t.Errorf("hold_seconds{le=\"1\"} = %d, want 2 (buckets %v)", le1s, h.GetBucket())
	}
}

// gather returns the metric family called name, gathered through a
// pedantic registry (which also checks the Collector's consistency).
func gather(t *testing.T, col prometheus.Collector, name string) *dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(col); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}
