package lingerprom_test

import (
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/linger-go/linger"
	lingerprom "github.com/linger-go/linger/prometheus"
)

// Export a Closer's counters on /metrics.
func ExampleNewCollector() {
	lc, err := linger.New(linger.Config{})
	if err != nil {
		log.Fatal(err)
	}
	prometheus.MustRegister(lingerprom.NewCollector(lc, prometheus.Labels{"server": "api"}))
	http.Handle("/metrics", promhttp.Handler())
}
