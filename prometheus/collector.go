// Package lingerprom exports a linger.Closer's counters as Prometheus
// metrics:
//
//	linger_connections_total{outcome}     connections closed, by outcome (counter)
//	linger_lingering_connections          connections lingering now (gauge)
//	linger_discarded_bytes_total          bytes read from peers and thrown away (counter)
//	linger_undelivered_connections_total  connections whose peer may not have got our
//	                                      last word, Linux only (counter): the one to alert on
//	linger_hold_seconds                   how long connections lingered (histogram)
//
// Successful traffic leaves linger_undelivered_connections_total at zero
// however its clients close: curl, which closes and then resets the TLS
// close_notify that answers its close, ends peer_closed, and Go's client,
// which can close with a close_notify unread and so reset, ends peer_reset;
// neither is undelivered. An outcome alone is not a failure; see
// linger.Report.Undelivered for what the counter counts.
//
// It lives in its own module so that linger itself does not depend on the
// Prometheus client library.
package lingerprom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/linger-go/linger"
)

// Collector is a prometheus.Collector reading a Closer's Stats at each
// scrape. Its methods are safe for concurrent use.
type Collector struct {
	c                                               *linger.Closer
	conns, lingering, discarded, undelivered, holds *prometheus.Desc
}

// NewCollector returns a Collector for c. constLabels, which may be nil,
// are added to every metric; they tell Closers apart when a process has
// several.
func NewCollector(c *linger.Closer, constLabels prometheus.Labels) *Collector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("linger_"+name, help, labels, constLabels)
	}
	return &Collector{
		c:           c,
		conns:       desc("connections_total", "Connections handed to linger and closed, by how they ended.", "outcome"),
		lingering:   desc("lingering_connections", "Connections lingering now."),
		discarded:   desc("discarded_bytes_total", "Bytes read from lingering connections and thrown away."),
		undelivered: desc("undelivered_connections_total", "Connections whose peer may not have got our last word: bytes of ours unacknowledged when the connection ended, not by the peer closing or resetting it (Linux only)."),
		holds:       desc("hold_seconds", "How long connections lingered."),
	}
}

// Describe sends the descriptors of the Collector's metrics.
func (x *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{x.conns, x.lingering, x.discarded, x.undelivered, x.holds} {
		ch <- d
	}
}

// Collect sends the metrics from one snapshot of the Closer's Stats.
func (x *Collector) Collect(ch chan<- prometheus.Metric) {
	s := x.c.Stats()
	// Stats has every outcome, zero or not, so each series exists from the
	// first scrape: a counter that appears only at its first increment
	// hides that increment from rate().
	for o, n := range s.Outcomes {
		ch <- prometheus.MustNewConstMetric(x.conns, prometheus.CounterValue, float64(n), o.String())
	}
	ch <- prometheus.MustNewConstMetric(x.lingering, prometheus.GaugeValue, float64(s.Lingering))
	ch <- prometheus.MustNewConstMetric(x.discarded, prometheus.CounterValue, float64(s.Discarded))
	ch <- prometheus.MustNewConstMetric(x.undelivered, prometheus.CounterValue, float64(s.Undelivered))
	// Stats.Hold is already cumulative, as Prometheus wants its buckets.
	buckets := make(map[float64]uint64, len(s.Hold.Bounds))
	for i, b := range s.Hold.Bounds {
		buckets[b.Seconds()] = s.Hold.Counts[i]
	}
	ch <- prometheus.MustNewConstHistogram(x.holds, s.Hold.Count, s.Hold.Sum.Seconds(), buckets)
}

var _ prometheus.Collector = (*Collector)(nil)
