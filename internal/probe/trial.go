package probe

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/connerr"
)

// TrialOutcome is what one trial saw. (A linger.Outcome, by contrast, is
// how a lingering connection ended on the server.)
type TrialOutcome string

const (
	// AlertFirst: the alert arrived and the connection was never reset. A
	// client still sending learns why it was refused.
	AlertFirst TrialOutcome = "alert"
	// AlertAfterError: the alert arrived, but the server also reset the
	// connection, before or after its FIN. A client still sending gets
	// ECONNRESET or EPIPE from its write and finds the alert only if it
	// reads afterwards (Linux keeps the alert readable after the reset,
	// Windows discards it).
	AlertAfterError TrialOutcome = "alert_after_error"
	// HTTPAnswer: instead of an alert the server answered with an HTTP
	// response (nginx answers an untrusted client certificate with "400
	// The SSL certificate error") and the connection was never reset. A
	// client reads an HTTP error, not an alert.
	HTTPAnswer TrialOutcome = "http"
	// HTTPThenReset: an HTTP response, then a reset: a client still
	// sending gets ECONNRESET or EPIPE from its write.
	HTTPThenReset TrialOutcome = "http_then_reset"
	// HTTPAccepted: with -provoke client-cert, the server completed the
	// request with a 2xx status: it accepted a client certificate that
	// no CA it should trust issued. Whatever happened to the connection
	// afterwards, that is the finding.
	HTTPAccepted TrialOutcome = "http_accepted"
	// Reset: the connection was reset and no alert ever arrived.
	Reset TrialOutcome = "reset"
	// EOF: the server closed the connection without sending an alert.
	EOF TrialOutcome = "eof"
	// Timeout: nothing decisive arrived within Config.Timeout.
	Timeout TrialOutcome = "timeout"
	// HandshakeFailed: the trial could not get to the provocation:
	// connection refused, an untrusted server certificate, no common
	// version or protocol, a server that requires a client certificate
	// (ModeRecord), or one that did not ask for one (ModeClientCert). A
	// configuration problem, not a delivery failure.
	HandshakeFailed TrialOutcome = "handshake_failed"
)

// Outcomes lists every outcome, in the order reports show them.
var Outcomes = []TrialOutcome{AlertFirst, AlertAfterError, HTTPAnswer, HTTPThenReset, HTTPAccepted, Reset, EOF, Timeout, HandshakeFailed}

// Describe returns the outcome's words for people.
func (o TrialOutcome) Describe() string {
	switch o {
	case AlertFirst:
		return "alert, no reset"
	case AlertAfterError:
		return "alert, then a reset"
	case HTTPAnswer:
		return "HTTP response, no reset"
	case HTTPThenReset:
		return "HTTP response, then a reset"
	case HTTPAccepted:
		return "HTTP 2xx: untrusted cert accepted"
	case Reset:
		return "reset, no alert"
	case EOF:
		return "EOF, no alert"
	case Timeout:
		return "timeout"
	case HandshakeFailed:
		return "handshake failed (configuration)"
	}
	return string(o)
}

// Trial is the record of one connection.
type Trial struct {
	N       int          `json:"n"`
	Outcome TrialOutcome `json:"outcome"`
	// Alert is the alert's name as RFC 8446 spells it, such as
	// "bad_record_mac"; AlertCode its number.
	Alert     string `json:"alert,omitempty"`
	AlertCode uint8  `json:"alert_code,omitempty"`
	// HTTPStatus is the status line of the server's HTTP response, when
	// it answered with one instead of an alert, with non-printable
	// characters escaped.
	HTTPStatus string `json:"http_status,omitempty"`
	// Version is the negotiated TLS version.
	Version string `json:"tls_version,omitempty"`
	// CertRequested reports that the server asked for a client
	// certificate.
	CertRequested bool `json:"cert_requested,omitempty"`
	// InHandshake reports that the server rejected the client inside the
	// handshake (TLS 1.2, or a TLS 1.3 server that checks early), before
	// the client could send any application data.
	InHandshake bool `json:"in_handshake,omitempty"`
	// Reset reports whether the server reset the connection: a read or a
	// write returned ECONNRESET or EPIPE, or, on Linux, the socket was
	// found reset once the probe stopped sending.
	Reset bool `json:"reset"`
	// FIN reports whether the server closed its side cleanly (the client
	// read EOF) before any reset.
	FIN bool `json:"fin"`
	// ResetSeenBy says what saw the reset: "write", "read", or "wire"
	// (the socket's state after the watch).
	ResetSeenBy string `json:"reset_seen_by,omitempty"`
	// ClientPort is the trial's local TCP port, to match the trial with a
	// packet capture.
	ClientPort int `json:"client_port,omitempty"`
	// Sent counts the bytes written after the handshake: the corrupted
	// record, the upload, and what was sent while watching after the
	// server's FIN.
	Sent int64 `json:"sent"`
	// Received counts application data the server sent, which a server
	// that accepted the client certificate, or answers over HTTP, might.
	Received int64 `json:"received,omitempty"`
	// AlertMS is the time from the provocation to reading the alert:
	// from writing the bad record, or from the start of the handshake in
	// ModeClientCert.
	AlertMS float64 `json:"alert_ms,omitempty"`
	// ElapsedMS is the whole trial, connecting and watching included.
	ElapsedMS float64 `json:"elapsed_ms"`
	// Error is the error that decided the outcome, if any: the handshake's,
	// or the first transport error, with non-printable characters escaped.
	Error string `json:"error,omitempty"`
}

// Record sizes. A record's payload may be up to 2^14 bytes plus 256 bytes of
// AEAD overhead in TLS 1.3 (RFC 8446, 5.2); the corrupted record is of a
// plausible size for a small request and a multiple of 16 so that a CBC
// suite in TLS 1.2 also gets as far as checking the MAC.
const (
	recordHeader     = 5
	badRecordPayload = 512
	maxRecordPayload = 1 << 14
	readBuffer       = 32 << 10
	// headKeep is how much of the server's application data a trial
	// keeps, to recognise an HTTP response and report its status line.
	headKeep = 512
	// trickle is what the writer sends, once the upload is done, while
	// the trial still watches: a small record every trickleEvery, as a
	// slow client still sending would, up to trickleMax in all, far too
	// little to exhaust a lingering server's byte budget.
	trickle      = 1 << 10
	trickleEvery = 10 * time.Millisecond
	trickleMax   = 64 << 10
)

// trial runs one connection: connect, handshake, provoke, upload and read
// concurrently, watch for a reset after the server's FIN, classify.
func (p *prober) trial(ctx context.Context, n int) (t Trial) {
	start := time.Now()
	t.N = n
	defer func() { t.ElapsedMS = ms(time.Since(start)) }()

	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	raw, err := p.cfg.Dial(ctx, "tcp", p.cfg.Addr)
	if err != nil {
		t.Outcome, t.Error = HandshakeFailed, printable("connect: "+err.Error())
		return t
	}
	defer raw.Close()
	if a, ok := raw.LocalAddr().(*net.TCPAddr); ok {
		t.ClientPort = a.Port
	}
	// Every read and write of the trial, through TLS or not, ends when
	// ctx does: at the trial's timeout, or at once when the caller cancels
	// (Ctrl-C). An expired deadline rather than Close, so that what was
	// read so far can still be classified. Not SetDeadline(ctx.Deadline()):
	// the poller could then fire before ctx reports the caller's
	// cancellation, and Run would count a trial it cut short.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	o, provoked, alertAt := p.observe(ctx, raw, &t)
	t.CertRequested = o.certAsked
	c := classify(o)
	t.Outcome, t.Error = c.outcome, c.err
	t.Reset, t.ResetSeenBy, t.FIN, t.InHandshake = c.reset, c.resetSeenBy, c.fin, c.inHandshake
	t.HTTPStatus = c.httpStatus
	if c.alert != nil {
		t.Alert, t.AlertCode = alert.Name(c.alert.Code), c.alert.Code
		t.AlertMS = ms(alertAt.Sub(provoked))
	}
	return t
}

// observe does the I/O of a trial on raw and records what it saw; the
// counters go to t as they change. It returns when the provocation was
// made and when crypto/tls returned its read error (the alert's arrival, if
// it is one).
func (p *prober) observe(ctx context.Context, raw net.Conn, t *Trial) (o observation, provoked, readEnd time.Time) {
	o.mode = p.cfg.Mode
	// The corrupted records go onto raw while crypto/tls may be writing
	// too (an alert of its own after a bad read); lockedConn keeps whole
	// records from interleaving.
	lc := &lockedConn{Conn: raw}
	cfg := p.tls.Clone()
	var certAsked atomic.Bool
	// GetClientCertificate, not Certificates: crypto/tls withholds a
	// certificate that the server's list of acceptable CAs does not
	// cover, and the server would then fail for the missing certificate
	// instead of rejecting ours. In ModeRecord it answers with no
	// certificate, only to learn that the server asked for one.
	cert := p.cert
	if cert == nil {
		cert = &tls.Certificate{}
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		certAsked.Store(true)
		return cert, nil
	}
	tc := tls.Client(lc, cfg)
	provoked = time.Now()
	o.handshake = tc.HandshakeContext(ctx)
	o.cancelled = ctx.Err() != nil
	o.certAsked = certAsked.Load()
	if v := tc.ConnectionState().Version; v != 0 {
		t.Version = tls.VersionName(v)
	}
	buf := make([]byte, readBuffer)
	if o.handshake != nil {
		if p.cfg.Mode == ModeClientCert && o.certAsked {
			// A rejection inside the handshake: nothing can be
			// uploaded before the handshake ends, so there is no
			// writer, but how the server closed still counts.
			o.read, readEnd = o.handshake, time.Now()
			o.tail = readTail(raw, o.read, buf)
		}
		return o, provoked, readEnd
	}
	if p.cfg.Mode == ModeClientCert && !o.certAsked {
		return o, provoked, readEnd
	}
	if p.cfg.Mode == ModeRecord {
		provoked = time.Now()
	}

	// Write and read at once, like a real client: the writer keeps
	// sending while the reader waits for what the server says, and goes
	// on sending a trickle after the upload until the trial stops it.
	stopWriting := make(chan struct{})
	var stopOnce sync.Once
	halt := func() {
		stopOnce.Do(func() {
			close(stopWriting)
			// A write blocked on a full send buffer (a server that
			// no longer reads) must return too.
			raw.SetWriteDeadline(time.Unix(1, 0))
		})
	}
	defer halt()
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		o.write = p.upload(tc, lc, &t.Sent, stopWriting)
	}()
	for {
		n, err := tc.Read(buf)
		if len(o.head) < headKeep {
			o.head = append(o.head, buf[:min(n, headKeep-len(o.head))]...)
		}
		o.received += int64(n)
		t.Received = o.received
		if err != nil {
			o.read, readEnd = err, time.Now()
			break
		}
	}
	o.tail = readTail(raw, o.read, buf)

	// The server has spoken and closed its side. A server that closed its
	// socket altogether (rather than half-closing and reading on) answers
	// the next data that arrives with an RST, which a client in the middle
	// of an upload runs into: so keep sending for p.cfg.Watch and look.
	if (isEOF(o.read) || isEOF(o.tail)) && !connerr.IsReset(o.read) && !connerr.IsReset(o.tail) {
		timer := time.NewTimer(p.cfg.Watch)
		select {
		case <-wdone: // the writer stopped: a reset, the trial's deadline, or its trickle is spent
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
	}
	halt()
	<-wdone
	if connerr.IsTimeout(o.write) {
		// The write deadline that halt set, not the server.
		o.write = nil
	}
	if !connerr.IsReset(o.write) && ctx.Err() == nil {
		// The last records written may still be on their way: wait until
		// the server has acknowledged them or answered them with an RST.
		o.wireReset = settle(ctx, raw, p.cfg.Watch)
	}
	return o, provoked, readEnd
}

// readTail looks, once crypto/tls has returned rerr, for how the server
// ended the connection: after an alert or a close_notify crypto/tls reads
// no more, so the raw connection is read until the server's FIN (EOF), its
// reset, or the deadline. Reading to EOF also means our own close sends
// FIN, not RST. It returns nil when rerr already tells (a reset, a
// timeout).
func readTail(raw net.Conn, rerr error, buf []byte) error {
	if _, ok := alert.FromError(rerr); !ok && !isEOF(rerr) {
		return nil
	}
	for {
		if _, err := raw.Read(buf); err != nil {
			return err
		}
	}
}

// upload sends the provocation's bytes, as a client still sending its
// request would: in ModeRecord the corrupted record and then more records
// of random bytes, straight onto the TCP connection; in ModeClientCert
// application data through TLS. Once the upload is done it sends a small
// record every trickleEvery until stop is closed. It counts what was
// written in *sent and returns the first write error.
func (p *prober) upload(tc *tls.Conn, lc *lockedConn, sent *int64, stop <-chan struct{}) error {
	write := func(n int64) error {
		if p.cfg.Mode == ModeRecord {
			if err := lc.writeRecord(p.garbage[:n]); err != nil {
				return err
			}
			atomic.AddInt64(sent, recordHeader+n)
			return nil
		}
		w, err := tc.Write(p.zeros[:n])
		atomic.AddInt64(sent, int64(w))
		return err
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	if p.cfg.Mode == ModeRecord {
		if err := write(badRecordPayload); err != nil {
			return err
		}
	} else if proto := tc.ConnectionState().NegotiatedProtocol; proto == "" || proto == "http/1.1" {
		// The upload is the body of an HTTP/1.1 request, as a real
		// client's would be: a server that reads the request before it
		// looks at the certificate (nginx) then answers the certificate,
		// not a malformed request.
		head := fmt.Sprintf("POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"+
			"Content-Length: %d\r\n\r\n", p.host, p.cfg.Upload+trickleMax)
		w, err := tc.Write([]byte(head))
		atomic.AddInt64(sent, int64(w))
		if err != nil {
			return err
		}
	}
	for left := p.cfg.Upload; left > 0 && !stopped(); {
		n := min(left, maxRecordPayload)
		if err := write(n); err != nil {
			return err
		}
		left -= n
	}
	tick := time.NewTicker(trickleEvery)
	defer tick.Stop()
	for left := trickleMax; left > 0; left -= trickle {
		select {
		case <-stop:
			return nil
		case <-tick.C:
			if err := write(trickle); err != nil {
				return err
			}
		}
	}
	return nil
}

// lockedConn serializes writes to the connection under TLS, so that a
// record written by crypto/tls and one written by the probe never
// interleave.
type lockedConn struct {
	net.Conn
	mu sync.Mutex
}

func (c *lockedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.Write(b)
}

// writeRecord writes one application-data record (type 23, legacy version
// 0x0303, as TLS 1.2 and 1.3 both send) with payload as its body.
func (c *lockedConn) writeRecord(payload []byte) error {
	rec := make([]byte, recordHeader+len(payload))
	rec[0], rec[1], rec[2] = 23, 3, 3
	rec[3], rec[4] = byte(len(payload)>>8), byte(len(payload))
	copy(rec[recordHeader:], payload)
	_, err := c.Write(rec)
	return err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
