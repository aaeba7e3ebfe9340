package lab

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
)

// A Scenario is what the server and the client do in one trial, and what
// counts as success.
type Scenario struct {
	// ID names the scenario in flags, JSON and tables.
	ID string
	// Title describes it for people.
	Title string
	// Success says what a successful trial is, as a column heading.
	Success string
	// Clients lists the clients the scenario applies to.
	Clients []string

	tlsVersion uint16 // pinned TLS version; 0 means Go's default range
	rejects    bool   // the server rejects the client's certificate
	upload     int    // bytes the client sends after the handshake
}

// Scenarios are the lab's scenarios, in the order it runs them.
var Scenarios = []Scenario{
	{
		ID: "tls13-1k", Title: "TLS 1.3, client certificate rejected, client sends 1 KiB",
		Success: "alert reported first", Clients: rejectionClients,
		tlsVersion: tls.VersionTLS13, rejects: true, upload: 1 << 10,
	},
	{
		ID: "tls13-1m", Title: "TLS 1.3, client certificate rejected, client uploads 1 MiB",
		Success: "alert reported first", Clients: rejectionClients,
		tlsVersion: tls.VersionTLS13, rejects: true, upload: 1 << 20,
	},
	{
		ID: "tls12", Title: "TLS 1.2, client certificate rejected while the client writes 1 MiB concurrently",
		// The rejection comes inside the handshake, before any HTTP, so
		// the HTTP/2 clients would repeat the HTTP/1.1 ones.
		Success: "alert reported first", Clients: []string{"go-tls", "go-http", "go-alert", "curl", "openssl"},
		tlsVersion: tls.VersionTLS12, rejects: true, upload: 1 << 20,
	},
	{
		ID: "midstream", Title: "server queues 4 MiB to a slow reader that is uploading, then ends the connection",
		Success: "got all 4 MiB and a clean end", Clients: []string{"go-tls"},
		upload: 1 << 20,
	},
	{
		ID: "http413", Title: "HTTPS: server answers 413 after the request head and closes while the client sends 1 MiB",
		Success: "got the 413", Clients: []string{"go-tls", "go-http", "go-alert", "curl"},
		upload: 1 << 20,
	},
}

// rejectionClients are the clients of the TLS 1.3 rejection scenarios:
// every one, the Go HTTP clients over both protocols.
var rejectionClients = []string{"go-tls", "go-http", "go-http-h2", "go-alert", "go-alert-h2", "curl", "openssl"}

// midstreamBytes is what the server of the midstream scenario queues.
const midstreamBytes = 4 << 20

// Strategies are the server close strategies, in table order.
var Strategies = []string{"close", "rst", "sleep", "linger"}

// StrategyTitles describe the strategies for people.
var StrategyTitles = map[string]string{
	"close":  "immediate close (Go's default)",
	"rst":    "SO_LINGER 0 (abortive close)",
	"sleep":  "CloseWrite + 500 ms sleep, no reading (net/http's rstAvoidanceDelay)",
	"linger": "linger: half-close, read and discard until the peer closes (default bounds)",
}

// Clients are the client programs, in table order.
var Clients = []string{"go-tls", "go-http", "go-http-h2", "go-alert", "go-alert-h2", "curl", "openssl"}

// ClientTitles describe the clients for people.
var ClientTitles = map[string]string{
	"go-tls":      "Go crypto/tls: writes, then reads (reads concurrently for tls12 and midstream)",
	"go-http":     "Go net/http client, stock transport, HTTP/1.1",
	"go-http-h2":  "Go net/http client, stock transport, offering HTTP/2 (the rejection scenarios' server speaks it)",
	"go-alert":    "Go net/http client from linger's client side (alert.NewTransport), HTTP/1.1",
	"go-alert-h2": "Go net/http client from linger's client side (alert.NewTransport), offering HTTP/2",
	"curl":        "curl",
	"openssl":     "openssl s_client",
}

// Networks are the kinds of network a cell runs on.
var Networks = []string{"loopback", "netns"}

func scenarioByID(id string) (Scenario, bool) {
	for _, s := range Scenarios {
		if s.ID == id {
			return s, true
		}
	}
	return Scenario{}, false
}

// selectIDs checks the chosen IDs against all and returns them in all's
// order; none chosen, or "all", means every one of all.
func selectIDs(what string, chosen, all []string) ([]string, error) {
	want := map[string]bool{}
	for _, id := range chosen {
		id = strings.TrimSpace(id)
		if id == "all" {
			return slices.Clone(all), nil
		}
		if !slices.Contains(all, id) {
			return nil, fmt.Errorf("unknown %s %q (have %s)", what, id, strings.Join(all, ", "))
		}
		want[id] = true
	}
	if len(want) == 0 {
		return slices.Clone(all), nil
	}
	var out []string
	for _, id := range all {
		if want[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

func scenarioIDs() []string {
	ids := make([]string, len(Scenarios))
	for i, s := range Scenarios {
		ids[i] = s.ID
	}
	return ids
}
