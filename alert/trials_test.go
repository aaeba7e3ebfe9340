package alert_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
)

// trials is the number of trials per cell; with -race too the package's
// tests take about 12 s on two cores.
const trials = 100

// upload is what every trial's client sends: 1 MiB.
var upload = make([]byte, 1<<20)

// tally counts trials by how the client's first error looked.
type tally struct {
	n, alerts int
	kinds     map[string]int
}

func (t *tally) add(err error) {
	t.n++
	if t.kinds == nil {
		t.kinds = make(map[string]int)
	}
	if _, ok := alert.FromError(err); ok {
		t.alerts++
	}
	t.kinds[kind(err)]++
}

func (t *tally) String() string {
	var ks []string
	for k, n := range t.kinds {
		ks = append(ks, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(ks)
	return fmt.Sprintf("alert reported %3d/%d  (%s)", t.alerts, t.n, strings.Join(ks, ", "))
}

// kind names an error for the tallies.
func kind(err error) string {
	_, isAlert := alert.FromError(err)
	var transport string
	switch {
	case err == nil:
		return "no error"
	case errors.Is(err, syscall.ECONNRESET):
		transport = "reset"
	case errors.Is(err, syscall.EPIPE):
		transport = "broken pipe"
	case errors.Is(err, net.ErrClosed):
		transport = "closed"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		transport = "EOF"
	}
	switch {
	case isAlert && transport != "":
		return "alert+" + transport
	case isAlert:
		return "alert"
	case transport != "":
		return transport
	}
	return "other: " + err.Error()
}

// cell is one combination of client and server.
type cell struct {
	wrapped   bool
	lingering bool
	version   uint16
	h2        bool // HTTP only: the client offers HTTP/2 (the server always does)
}

func (c cell) name() string {
	s := "stock"
	if c.wrapped {
		s = "wrapped"
	}
	if c.lingering {
		s += "/linger"
	} else {
		s += "/plain"
	}
	if c.version == tls.VersionTLS12 {
		s += "/TLS1.2"
	} else {
		s += "/TLS1.3"
	}
	if c.h2 {
		s += "/h2"
	}
	return s
}

// cells are the combinations of client and server; with protos, each once
// over HTTP/1.1 and once over HTTP/2.
func cells(protos bool) []cell {
	var cs []cell
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, h2 := range []bool{false, true} {
			if h2 && !protos {
				continue
			}
			for _, lingering := range []bool{false, true} {
				for _, wrapped := range []bool{false, true} {
					cs = append(cs, cell{wrapped, lingering, v, h2})
				}
			}
		}
	}
	return cs
}

// runCells runs trial for every cell, two cells at a time, and prints the
// tallies side by side. Wrapped clients must report the alert in 99 % of
// trials.
func runCells(t *testing.T, what string, protos bool, trial func(t *testing.T, c cell) *tally) {
	before := proc.OpenFDs()
	var mu sync.Mutex
	results := map[string]*tally{}
	t.Run("cells", func(t *testing.T) {
		for _, c := range cells(protos) {
			t.Run(c.name(), func(t *testing.T) {
				t.Parallel()
				tl := trial(t, c)
				t.Logf("%s %-22s %v", what, c.name(), tl)
				mu.Lock()
				results[c.name()] = tl
				mu.Unlock()
				if c.wrapped && tl.alerts*100 < tl.n*99 {
					t.Errorf("wrapped client reported the alert in %d of %d trials, want >= 99 %%", tl.alerts, tl.n)
				}
			})
		}
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %d trials a cell, alert reported (stock vs wrapped):\n", what, trials)
	for _, v := range []string{"TLS1.2", "TLS1.3"} {
		for _, proto := range []string{"", "/h2"} {
			for _, srv := range []string{"plain", "linger"} {
				s, w := results["stock/"+srv+"/"+v+proto], results["wrapped/"+srv+"/"+v+proto]
				if s != nil && w != nil {
					fmt.Fprintf(&b, "  %s%-3s %-6s server: stock %3d/%d  wrapped %3d/%d\n", v, proto, srv, s.alerts, s.n, w.alerts, w.n)
				}
			}
		}
	}
	t.Log(b.String())
	testbed.WaitFDs(t, before)
}

// TestHTTPTrials: an http.Client POSTs 1 MiB with an untrusted client
// certificate to an http.Server that offers HTTP/2 and HTTP/1.1 and rejects
// the certificate, closing at once (plain) or lingering. The client offers
// HTTP/1.1 only, or HTTP/2 as well; every trial is the first request on a
// new connection, since the refused one is gone.
func TestHTTPTrials(t *testing.T) {
	p := testbed.SharedPKI(t)
	runCells(t, "net/http POST 1 MiB", true, func(t *testing.T, c cell) *tally {
		addr := serveHTTP(t, c.lingering, p.ServerConfig(c.version), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
		}))

		client := httpClient(p.ClientConfig(&p.Untrusted, c.version), c.wrapped, c.h2)
		client.Timeout = 10 * time.Second
		defer client.CloseIdleConnections()
		url := "https://" + addr + "/"
		tl := new(tally)
		for range trials {
			resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(upload))
			if err == nil {
				resp.Body.Close()
				t.Fatal("the server accepted an untrusted certificate")
			}
			tl.add(err)
		}
		return tl
	})
}

// httpClient returns the stock client or package alert's, offering HTTP/2
// or HTTP/1.1 only.
func httpClient(cfg *tls.Config, wrapped, h2 bool) *http.Client {
	if wrapped {
		if !h2 {
			cfg.NextProtos = []string{"http/1.1"}
		}
		return alert.NewHTTPClient(cfg)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(h2)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, Protocols: &protos}}
}

// TestRawTrials: a crypto/tls client writes 1 MiB, then reads, with an
// untrusted client certificate; its first error counts.
func TestRawTrials(t *testing.T) {
	p := testbed.SharedPKI(t)
	runCells(t, "crypto/tls write 1 MiB, read", false, func(t *testing.T, c cell) *tally {
		s := serveTLS(t, c.lingering, p.ServerConfig(c.version), rejecting)
		cfg := p.ClientConfig(&p.Untrusted, c.version)
		tl := new(tally)
		for range trials {
			tc := dialTLS(t, s.Addr, cfg)
			var conn net.Conn = tc
			if c.wrapped {
				conn = alert.Wrap(tc)
			}
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, err := conn.Write(upload)
			if err == nil {
				_, err = conn.Read(make([]byte, 100))
			}
			conn.Close()
			if err == nil {
				t.Fatal("the server accepted an untrusted certificate")
			}
			tl.add(err)
		}
		return tl
	})
}
