//go:build linux

package bench

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/linger-go/linger/internal/connerr"
)

// srcAddrs returns k loopback source addresses for the peers. Spreading the
// peers over several addresses keeps each (source, destination) pair far
// from the 28,000 ephemeral ports Linux has for it.
func srcAddrs(k int) string { return srcAddrsFrom(0, k) }

// srcAddrsFrom returns k addresses starting at the off-th, so that several
// children can use distinct ones.
func srcAddrsFrom(off, k int) string {
	s := make([]string, k)
	for i := range s {
		s[i] = fmt.Sprintf("127.66.%d.%d", (off+i)/250, (off+i)%250+1)
	}
	return strings.Join(s, ",")
}

func parseSrcs(list string) []net.IP {
	var ips []net.IP
	for _, s := range strings.Split(list, ",") {
		if ip := net.ParseIP(strings.TrimSpace(s)); ip != nil {
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 {
		ips = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	return ips
}

func dialer(src net.IP) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
}

// runPeer is the far end of "held": it opens n connections, reports
// "ready", and closes them all at once when told "close", reporting how
// long closing took ("closed NS"). It exits when its stdin closes.
func runPeer(args []string) error {
	fs := flag.NewFlagSet("peer", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address")
	n := fs.Int("n", 0, "connections")
	src := fs.String("src", "", "source addresses, comma-separated")
	par := fs.Int("c", 64, "connections dialled at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srcs := parseSrcs(*src)
	conns := make([]net.Conn, *n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range *par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				c, err := dialer(srcs[i%len(srcs)]).Dial("tcp", *addr)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	if firstErr != nil {
		closeAll()
		return firstErr
	}
	fmt.Printf("ready %d\n", *n)
	cmds := make(chan string)
	go exitOnStdinEOF(cmds)
	for cmd := range cmds {
		if cmd == "close" {
			t0 := time.Now()
			closeAll()
			fmt.Printf("closed %d\n", time.Since(t0).Nanoseconds())
			conns = nil
		}
	}
	closeAll()
	return nil
}

// alertMsg stands for the server's last word in "hold".
const alertMsg = "fatal alert: unknown_ca\n"

// runHoldPeer is the far end of "hold": c workers each connect, send a
// small request the server never reads, read the server's last word, and
// close at once, recording when (CLOCK_MONOTONIC). At the end it prints
// "fin LOCALADDR NS" for every connection, then "done".
func runHoldPeer(args []string) error {
	fs := flag.NewFlagSet("holdpeer", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address")
	n := fs.Int("n", 0, "connections in all")
	par := fs.Int("c", 16, "connections at once")
	src := fs.String("src", "", "source addresses, comma-separated")
	req := fs.Int("req", 1024, "bytes each peer sends before reading")
	if err := fs.Parse(args); err != nil {
		return err
	}
	go exitOnStdinEOF(nil)
	srcs := parseSrcs(*src)
	type fin struct {
		addr string
		t    int64
	}
	fins := make([]fin, *n)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	body := make([]byte, *req)
	for range *par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, len(alertMsg))
			for {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				c, err := dialer(srcs[i%len(srcs)]).Dial("tcp", *addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write(body)
				_, err = io.ReadFull(c, buf)
				t := monoNow()
				local := c.LocalAddr().String()
				c.Close()
				if err != nil {
					failed.Add(1)
					continue
				}
				fins[i] = fin{local, t}
			}
		}()
	}
	wg.Wait()
	for _, f := range fins {
		if f.addr != "" {
			fmt.Printf("fin %s %d\n", f.addr, f.t)
		}
	}
	fmt.Printf("done %d\n", failed.Load())
	return nil
}

// floodCounts is what a flood client reports.
type floodCounts struct {
	Dials, Handshakes, Alerts, Resets, Other int64
	// Sent counts the bytes written after the handshakes.
	Sent   int64
	Errors map[string]int64
}

// The kinds of flood clients. All complete a TLS 1.3 handshake with an
// untrusted certificate (the server rejects it only after the client's side
// of the handshake is done) and then send.
const (
	// upload writes a fixed body, then reads: a curl or Go POST.
	kindUpload = "upload"
	// cooperative writes flat out while reading, and stops as soon as the
	// alert arrives.
	kindCooperative = "cooperative"
	// deaf writes flat out and never reads: only a failed write stops it.
	kindDeaf = "deaf"
)

// knownKind reports whether kind is one of the flood clients' kinds, so that
// a mistyped one is an error rather than some other client.
func knownKind(kind string) bool {
	return kind == kindUpload || kind == kindCooperative || kind == kindDeaf
}

// runFloodClient completes handshakes as fast as it can, for a while.
func runFloodClient(args []string) error {
	fs := flag.NewFlagSet("floodclient", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address")
	from := fs.Int64("from", 0, "count the connections dialled from this CLOCK_MONOTONIC time (ns)")
	to := fs.Int64("to", 0, "until this one; run until half a second later")
	workers := fs.Int("workers", 32, "connections at once")
	src := fs.String("src", "", "source addresses, comma-separated")
	caFile := fs.String("ca", "", "CA certificate (PEM)")
	certFile := fs.String("cert", "", "client certificate (PEM)")
	keyFile := fs.String("key", "", "client key (PEM)")
	kind := fs.String("kind", kindCooperative, "upload, cooperative or deaf")
	bodySize := fs.Int("body", 1<<20, "bytes an upload client sends")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !knownKind(*kind) {
		return fmt.Errorf("-kind %q: want %s, %s or %s", *kind, kindUpload, kindCooperative, kindDeaf)
	}
	go exitOnStdinEOF(nil)
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		RootCAs: pool, ServerName: "localhost",
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		// As testbed.ClientConfig: send the certificate even though the
		// server's CA list does not cover it.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}
	srcs := parseSrcs(*src)
	body := make([]byte, *bodySize)
	var mu sync.Mutex
	total := floodCounts{Errors: map[string]int64{}}
	// The server counts what it rejects within [from, to); the clients
	// count what they dial within it, so that the warm-up and the tail,
	// when the server no longer counts, are in neither.
	end := time.Now().Add(time.Duration(*to-monoNow()) + 500*time.Millisecond)
	var wg sync.WaitGroup
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var k floodCounts // the connection under way, dialled at started
			var started int64
			out := floodCounts{Errors: map[string]int64{}}
			count := func() {
				if k.Dials > 0 && started >= *from && started < *to {
					out.add(k)
				}
			}
			chunk := make([]byte, 16<<10)
			for i := w; time.Now().Before(end); i += *workers {
				count()
				k, started = floodCounts{Errors: map[string]int64{}, Dials: 1}, monoNow()
				raw, err := dialer(srcs[i%len(srcs)]).Dial("tcp", *addr)
				if err != nil {
					k.Errors["dial: "+connerr.Name(err)]++
					time.Sleep(time.Millisecond)
					continue
				}
				raw.SetDeadline(time.Now().Add(10 * time.Second))
				c := tls.Client(raw, cfg)
				if err := c.Handshake(); err != nil {
					k.Errors["handshake: "+connerr.Name(err)]++
					raw.Close()
					continue
				}
				k.Handshakes++
				var ferr error // the first error the application sees
				switch *kind {
				case kindUpload:
					var n int
					n, ferr = c.Write(body)
					k.Sent += int64(n)
					if ferr == nil {
						_, ferr = c.Read(make([]byte, 1))
					}
				case kindCooperative:
					var rerr error
					rdone := make(chan struct{})
					go func() {
						defer close(rdone)
						_, rerr = c.Read(make([]byte, 1))
						raw.Close() // the alert is in: stop sending
					}()
					var werr error
					for werr == nil {
						var n int
						n, werr = c.Write(chunk)
						k.Sent += int64(n)
					}
					<-rdone
					ferr = rerr
				case kindDeaf:
					for ferr == nil {
						var n int
						n, ferr = c.Write(chunk)
						k.Sent += int64(n)
					}
				}
				raw.Close()
				switch {
				case ferr != nil && strings.Contains(ferr.Error(), "unknown certificate authority"):
					k.Alerts++
				case errors.Is(ferr, syscall.ECONNRESET), errors.Is(ferr, syscall.EPIPE):
					k.Resets++
				default:
					k.Other++
					k.Errors[connerr.Name(ferr)]++
				}
			}
			count()
			mu.Lock()
			total.add(out)
			mu.Unlock()
		}()
	}
	wg.Wait()
	b, _ := json.Marshal(total)
	fmt.Printf("counts %s\n", b)
	return nil
}
