package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/linger-go/linger/alert"
)

// Outcome is what one trial saw.
type Outcome string

const (
	// AlertFirst: the alert arrived and the connection was never reset. A
	// client still sending learns why it was refused.
	AlertFirst Outcome = "alert"
	// AlertAfterError: the alert arrived, but the server also reset the
	// connection while the upload was still coming. A client still sending
	// gets ECONNRESET or EPIPE from its write and finds the alert only if
	// it reads afterwards (Linux keeps the alert readable after the reset,
	// Windows discards it).
	AlertAfterError Outcome = "alert_after_error"
	// Reset: the connection was reset and no alert ever arrived.
	Reset Outcome = "reset"
	// EOF: the server closed the connection without sending an alert.
	EOF Outcome = "eof"
	// Timeout: nothing decisive arrived within Config.Timeout.
	Timeout Outcome = "timeout"
	// HandshakeFailed: the trial could not get to the provocation:
	// connection refused, an untrusted server certificate, no common
	// version or protocol, or (ModeClientCert) a server that did not ask
	// for a certificate. A configuration problem, not a delivery failure.
	HandshakeFailed Outcome = "handshake_failed"
)

// Outcomes lists every outcome, in the order reports show them.
var Outcomes = []Outcome{AlertFirst, AlertAfterError, Reset, EOF, Timeout, HandshakeFailed}

// Describe returns the outcome's words for people.
func (o Outcome) Describe() string {
	switch o {
	case AlertFirst:
		return "alert received first"
	case AlertAfterError:
		return "alert found after a transport error"
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
	N       int     `json:"n"`
	Outcome Outcome `json:"outcome"`
	// Alert is the alert's name as RFC 8446 spells it, such as
	// "bad_record_mac"; AlertCode its number.
	Alert     string `json:"alert,omitempty"`
	AlertCode uint8  `json:"alert_code,omitempty"`
	// Version is the negotiated TLS version.
	Version string `json:"tls_version,omitempty"`
	// Reset reports whether the connection was reset (ECONNRESET or EPIPE
	// on a read or a write).
	Reset bool `json:"reset"`
	// Sent counts the bytes written after the handshake: the corrupted
	// record and the upload.
	Sent int64 `json:"sent"`
	// Received counts application data the server sent, which a server
	// that accepted the client certificate might.
	Received int64 `json:"received,omitempty"`
	// AlertMS is the time from the provocation to reading the alert:
	// from writing the bad record, or from the start of the handshake in
	// ModeClientCert.
	AlertMS float64 `json:"alert_ms,omitempty"`
	// ElapsedMS is the whole trial, connecting included.
	ElapsedMS float64 `json:"elapsed_ms"`
	// Error is the error that decided the outcome, if any: the handshake's,
	// or the first transport error.
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
)

// trial runs one connection: connect, handshake, provoke, upload and read
// concurrently, classify.
func (p *prober) trial(ctx context.Context, n int) (t Trial) {
	start := time.Now()
	t.N = n
	defer func() { t.ElapsedMS = ms(time.Since(start)) }()

	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	raw, err := p.cfg.Dial(ctx, "tcp", p.cfg.Addr)
	if err != nil {
		t.Outcome, t.Error = HandshakeFailed, "connect: "+err.Error()
		return t
	}
	defer raw.Close()
	// Every read and write of the trial, through TLS or not, ends when
	// ctx does: at the trial's timeout, or at once when the caller cancels
	// (Ctrl-C). An expired deadline rather than Close, so that what was
	// read so far can still be classified. Not SetDeadline(ctx.Deadline()):
	// the poller could then fire before ctx reports the caller's
	// cancellation, and Run would count a trial it cut short.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	// The corrupted records go onto raw while crypto/tls may be writing
	// too (an alert of its own after a bad read); lockedConn keeps whole
	// records from interleaving.
	lc := &lockedConn{Conn: raw}
	cfg := p.tls.Clone()
	var certAsked atomic.Bool
	if p.cfg.Mode == ModeClientCert {
		// GetClientCertificate, not Certificates: crypto/tls withholds a
		// certificate that the server's list of acceptable CAs does not
		// cover, and the server would then fail for the missing
		// certificate instead of rejecting ours.
		cert := p.cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			certAsked.Store(true)
			return cert, nil
		}
	}
	tc := tls.Client(lc, cfg)
	provoked := time.Now()
	herr := tc.HandshakeContext(ctx)
	if v := tc.ConnectionState().Version; v != 0 {
		t.Version = tls.VersionName(v)
	}

	var werr, rerr, rawErr error
	var readEnd time.Time // when crypto/tls returned its error: the alert's arrival, if it is one
	buf := make([]byte, readBuffer)
	switch {
	case herr != nil && (p.cfg.Mode != ModeClientCert || !certAsked.Load() || isLocal(herr)):
		t.Outcome, t.Error = HandshakeFailed, handshakeError(ctx, herr)
		return t
	case herr != nil:
		// The server asked for our certificate and then failed the
		// handshake (TLS 1.2, or an early check): this is the provoked
		// rejection. Nothing can be uploaded before the handshake ends,
		// so there is no writer, but how the server closed still counts.
		rerr, readEnd = herr, time.Now()
		rawErr = afterRead(raw, rerr, buf)
	case p.cfg.Mode == ModeClientCert && !certAsked.Load():
		t.Outcome = HandshakeFailed
		t.Error = "the server did not ask for a client certificate, so it cannot reject one (try --provoke record)"
		return t
	default:
		if p.cfg.Mode == ModeRecord {
			provoked = time.Now()
		}
		// Write and read at once, like a real client: the writer keeps
		// sending while the reader waits for what the server says.
		wdone := make(chan struct{})
		go func() {
			defer close(wdone)
			werr = p.upload(tc, lc, &t.Sent)
		}()
		for {
			n, err := tc.Read(buf)
			t.Received += int64(n)
			if err != nil {
				rerr, readEnd = err, time.Now()
				break
			}
		}
		rawErr = afterRead(raw, rerr, buf)
		// Whether the server resets the connection while we are still
		// sending is what the probe is about, so the writer gets to
		// finish (or fail) before the trial is classified. The trial's
		// deadline bounds the wait.
		<-wdone
	}

	ae, found := alert.FromError(rerr)
	if found {
		t.Alert, t.AlertCode = alert.Name(ae.Code), ae.Code
		t.AlertMS = ms(readEnd.Sub(provoked))
	}
	t.Reset = isReset(werr) || isReset(rerr) || isReset(rawErr)
	switch {
	case found && t.Reset:
		t.Outcome, t.Error = AlertAfterError, firstReset(werr, rawErr, rerr)
	case found:
		t.Outcome = AlertFirst
	case t.Reset:
		t.Outcome, t.Error = Reset, firstReset(werr, rerr, rawErr)
	case isTimeout(rerr):
		t.Outcome, t.Error = Timeout, "no alert within the trial's timeout"
	default:
		t.Outcome, t.Error = EOF, errString(rerr)
	}
	if !found && t.Received > 0 && p.cfg.Mode == ModeClientCert {
		// A server that answers with data took the certificate: there
		// was no rejection to deliver.
		t.Error += fmt.Sprintf("; the server sent %d bytes of application data: did it accept the certificate?", t.Received)
	}
	return t
}

// afterRead looks, once crypto/tls has returned rerr, for how the server
// ended the connection: after an alert crypto/tls reads no more, so the
// raw connection is read until the server's FIN (EOF), its reset, or the
// deadline. Reading to EOF also means our own close sends FIN, not RST.
func afterRead(raw net.Conn, rerr error, buf []byte) error {
	if _, ok := alert.FromError(rerr); !ok {
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
// application data through TLS. It counts what was written in *sent and
// returns the first write error.
func (p *prober) upload(tc *tls.Conn, lc *lockedConn, sent *int64) error {
	if p.cfg.Mode == ModeRecord {
		if err := lc.writeRecord(p.garbage[:badRecordPayload]); err != nil {
			return err
		}
		atomic.AddInt64(sent, recordHeader+badRecordPayload)
		for left := p.cfg.Upload; left > 0; {
			n := min(left, maxRecordPayload)
			if err := lc.writeRecord(p.garbage[:n]); err != nil {
				return err
			}
			atomic.AddInt64(sent, recordHeader+n)
			left -= n
		}
		return nil
	}
	chunk := make([]byte, maxRecordPayload)
	for left := p.cfg.Upload; left > 0; {
		n, err := tc.Write(chunk[:min(left, int64(len(chunk)))])
		atomic.AddInt64(sent, int64(n))
		left -= int64(n)
		if err != nil {
			return err
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

// isReset reports whether err says the peer reset the connection: the first
// write or read after an RST returns ECONNRESET, later writes EPIPE.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// isLocal reports whether a handshake error is this side's doing (crypto/tls
// sends a "local error" alert, or certificate verification failed) rather
// than the server's rejection.
func isLocal(err error) bool {
	if _, ok := alert.FromError(err); ok {
		return false
	}
	return !isReset(err) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isTimeout(err)
}

// handshakeError describes a failed handshake for people, with a hint at
// the usual fix.
func handshakeError(ctx context.Context, err error) string {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
	)
	s := err.Error()
	switch {
	case isTimeout(err) || ctx.Err() != nil:
		return "handshake timed out: is this a TLS port?"
	case errors.As(err, &unknown):
		return s + " (give the server's CA with --ca, or --insecure)"
	case errors.As(err, &hostname):
		return s + " (set --servername, or --insecure)"
	}
	if ae, ok := alert.FromError(err); ok && ae.Code == 116 {
		return s + " (the server requires a client certificate: try --provoke client-cert)"
	}
	return s
}

// firstReset returns the text of the first of errs that reports a reset.
func firstReset(errs ...error) string {
	for _, err := range errs {
		if isReset(err) {
			return err.Error()
		}
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
