// Package probe asks a TLS server whether its fatal alerts reach a client
// that is still sending.
//
// Each trial connects, provokes a fatal alert and keeps uploading, the way a
// client in the middle of a request body would, while it reads concurrently
// to see what arrives: the alert, and whether the server then reset the
// connection. Two provocations exist. ModeRecord completes a normal
// handshake and then writes one corrupted application-data record straight
// onto the TCP connection, which no server can authenticate, so it must
// answer bad_record_mac. ModeClientCert presents a client certificate the
// server does not trust; with TLS 1.3 the client's handshake completes before
// the server has looked at it, so the client is already uploading when the
// rejection comes.
//
// A server that closes at once while the upload is still arriving makes its
// kernel send a TCP reset, which discards what it had not yet sent and makes
// the client's next write fail: the alert is lost, or found only by a client
// that reads after its write failed. A server that read everything before it
// closed sends a FIN instead, but if it closed its socket rather than only
// its side of the connection, the next data the client sends draws a reset
// all the same; so a trial goes on sending for Config.Watch after the FIN
// and looks. A lingering close (package github.com/linger-go/linger)
// delivers the alert with no reset.
//
// Some servers refuse a certificate with an HTTP response instead of an
// alert (nginx answers "400 The SSL certificate error"); a trial reports the
// status line, and whether a reset followed it.
package probe

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/linger-go/linger/internal/pki"
)

// Mode is how a trial provokes the server's fatal alert.
type Mode string

const (
	// ModeRecord completes the handshake, then writes one application-data
	// record of random bytes onto the TCP connection underneath TLS. The
	// server cannot authenticate it and must answer bad_record_mac.
	ModeRecord Mode = "record"
	// ModeClientCert presents a client certificate the server rejects:
	// Config.ClientCert, or a freshly generated self-signed one.
	ModeClientCert Mode = "client-cert"
)

// Defaults for the zero fields of Config. They keep the probe polite: a
// handful of connections, spaced out, each bounded in time.
const (
	DefaultTrials   = 20
	DefaultUpload   = 1 << 20
	DefaultTimeout  = 10 * time.Second
	DefaultInterval = 100 * time.Millisecond
	DefaultWatch    = 500 * time.Millisecond

	// MaxTrials bounds Config.Trials: the probe asks a question, it is not
	// a load generator.
	MaxTrials = 1000
)

// Config describes a probe.
type Config struct {
	// Addr is the server's HOST:PORT.
	Addr string

	// Mode is the provocation; empty means ModeRecord.
	Mode Mode

	// TLS is the base client configuration: ServerName, RootCAs or
	// InsecureSkipVerify, NextProtos, MinVersion and MaxVersion are used as
	// given. It is cloned for every trial; its client certificate settings
	// are replaced according to Mode. Nil means the zero configuration with
	// ServerName set to Addr's host.
	TLS *tls.Config

	// ClientCert is the certificate ModeClientCert presents; nil means a
	// self-signed one generated once for the whole probe.
	ClientCert *tls.Certificate

	// Upload is how many bytes each trial sends after provoking the alert,
	// as a client still sending its request would; 0 means DefaultUpload.
	Upload int64

	// Trials is the number of connections; 0 means DefaultTrials.
	Trials int

	// Timeout bounds each trial, from connecting to the end of the
	// upload; 0 means DefaultTimeout.
	Timeout time.Duration

	// Interval is the pause between trials; 0 means DefaultInterval.
	Interval time.Duration

	// Watch is how long a trial goes on sending after the server's FIN,
	// and then at most how long it waits for the server to acknowledge
	// the last bytes, to see whether a reset follows: a server that
	// closed its socket instead of half-closing it answers the next data
	// with an RST. It is spent in full only against servers that do not
	// reset; 0 means DefaultWatch.
	Watch time.Duration

	// Dial connects to the server; nil means a net.Dialer. Tests use it to
	// dial from inside a network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// OnTrial, if set, is called after each trial, for progress output.
	OnTrial func(Trial)
}

// Run probes the server cfg describes and returns the report. It stops
// early when the first trial fails at the handshake, because a
// configuration problem would only repeat. If ctx is cancelled, Run returns
// the report of the trials that finished and ctx's error; an interrupted
// trial is left out.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	p, err := newProber(cfg)
	if err != nil {
		return nil, err
	}
	rep := &Report{
		Target:  p.cfg.Addr,
		Mode:    p.cfg.Mode,
		Upload:  p.cfg.Upload,
		Planned: p.cfg.Trials,
	}
	handshakes := 0
	for i := 1; i <= p.cfg.Trials; i++ {
		if i > 1 && !sleep(ctx, p.cfg.Interval) {
			break
		}
		t := p.trial(ctx, i)
		if ctx.Err() != nil {
			break // the trial was cut short by the caller, not by the server
		}
		rep.Trials = append(rep.Trials, t)
		if p.cfg.OnTrial != nil {
			p.cfg.OnTrial(t)
		}
		if t.Outcome != HandshakeFailed {
			handshakes++
		} else if handshakes == 0 {
			rep.Stopped = "stopped after the first trial failed at the handshake: a configuration problem repeats"
			break
		}
	}
	rep.summarize()
	return rep, ctx.Err()
}

// prober holds what every trial of one probe shares.
type prober struct {
	cfg  Config
	tls  *tls.Config
	cert *tls.Certificate
	// garbage is the random payload of the corrupted records. Its content
	// does not matter, only that it cannot be authenticated, so one buffer
	// serves every record of the probe. zeros is the upload of
	// ModeClientCert, which goes through TLS. Both are only read.
	garbage []byte
	zeros   []byte
	// host names the server in the Host header of ModeClientCert's
	// request.
	host string
}

func newProber(cfg Config) (*prober, error) {
	if cfg.Addr == "" {
		return nil, errors.New("probe: no address")
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("probe: address %q: %w", cfg.Addr, err)
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeRecord
	case ModeRecord, ModeClientCert:
	default:
		return nil, fmt.Errorf("probe: unknown provocation %q (want %q or %q)", cfg.Mode, ModeRecord, ModeClientCert)
	}
	if cfg.Upload == 0 {
		cfg.Upload = DefaultUpload
	}
	if cfg.Trials == 0 {
		cfg.Trials = DefaultTrials
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Watch == 0 {
		cfg.Watch = DefaultWatch
	}
	switch {
	case cfg.Upload < 0:
		return nil, fmt.Errorf("probe: negative upload %d", cfg.Upload)
	case cfg.Trials < 0 || cfg.Trials > MaxTrials:
		return nil, fmt.Errorf("probe: %d trials: want 1 to %d", cfg.Trials, MaxTrials)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("probe: negative timeout %v", cfg.Timeout)
	case cfg.Interval < 0:
		return nil, fmt.Errorf("probe: negative interval %v", cfg.Interval)
	case cfg.Watch < 0:
		return nil, fmt.Errorf("probe: negative watch %v", cfg.Watch)
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	p := &prober{cfg: cfg, host: host}
	if cfg.TLS != nil {
		p.tls = cfg.TLS.Clone()
	} else {
		p.tls = &tls.Config{}
	}
	if p.tls.ServerName == "" && !p.tls.InsecureSkipVerify {
		// What tls.Dial does: verify the certificate for the dialed host,
		// which may be an IP address.
		p.tls.ServerName = host
	}
	if p.tls.ServerName != "" {
		p.host = p.tls.ServerName
	}
	p.tls.Certificates, p.tls.GetClientCertificate = nil, nil
	if cfg.Mode == ModeClientCert {
		if p.cert = cfg.ClientCert; p.cert == nil {
			if p.cert, err = selfSigned(); err != nil {
				return nil, fmt.Errorf("probe: client certificate: %w", err)
			}
		}
		p.zeros = make([]byte, maxRecordPayload)
	} else {
		p.garbage = make([]byte, maxRecordPayload)
		rand.Read(p.garbage)
	}
	return p, nil
}

// sleep waits for d or until ctx is done, and reports whether ctx is still
// alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// selfSigned makes a client certificate no server trusts.
func selfSigned() (*tls.Certificate, error) {
	c, err := pki.SelfSigned("linger probe (untrusted, self-signed)")
	return &c, err
}
