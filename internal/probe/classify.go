package probe

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"

	"github.com/linger-go/linger/alert"
	"github.com/linger-go/linger/internal/connerr"
)

// observation is what one connection showed, before it is classified.
// Errors are as the calls returned them.
type observation struct {
	mode Mode
	// certAsked: the server sent a CertificateRequest.
	certAsked bool
	// handshake is the handshake's error; cancelled says the trial's
	// context ended before the handshake did.
	handshake error
	cancelled bool
	// read is crypto/tls's read error after the handshake (after a
	// rejection inside the handshake, the handshake's error).
	read error
	// tail is the raw connection's read error after crypto/tls stopped
	// reading at an alert, a close_notify or EOF: EOF for the server's
	// FIN, a reset, or a timeout; nil if not read.
	tail error
	// write is the uploader's first error, during the upload or the
	// watch after the server's FIN.
	write error
	// wireReset: once the probe stopped sending, the socket was found
	// reset (Linux: TCP_INFO).
	wireReset bool
	received  int64
	// head is the start of the server's application data.
	head []byte
}

// classified is what classify makes of an observation.
type classified struct {
	outcome     TrialOutcome
	alert       *alert.Error
	httpStatus  string
	inHandshake bool
	reset       bool
	resetSeenBy string
	fin         bool
	err         string
}

// classify decides a trial's outcome from what it observed. It does no I/O,
// so every combination of errors is tested in a table.
func classify(o observation) classified {
	var c classified
	if o.handshake != nil {
		switch {
		case o.mode == ModeRecord && o.certAsked && !isLocal(o.handshake) && !connerr.IsTimeout(o.handshake) && !o.cancelled:
			c.outcome = HandshakeFailed
			c.err = handshakeError(o.handshake, o.cancelled) + " (the server asked for a client certificate and " +
				"refused the connection without one: it requires one, so try -provoke client-cert)"
			return c
		case o.mode != ModeClientCert || !o.certAsked || isLocal(o.handshake) || o.cancelled:
			c.outcome, c.err = HandshakeFailed, handshakeError(o.handshake, o.cancelled)
			return c
		}
		// The server asked for our certificate and then failed the
		// handshake: the provoked rejection, inside the handshake.
		c.inHandshake = true
	} else if o.mode == ModeClientCert && !o.certAsked {
		c.outcome = HandshakeFailed
		c.err = "the server did not ask for a client certificate, so it cannot reject one (try -provoke record)"
		return c
	}

	c.alert, _ = alert.FromError(o.read)
	if c.httpStatus = statusLine(o.head); c.httpStatus != "" {
		if title := httpTitle(o.head); title != "" {
			c.httpStatus += " (" + title + ")"
		}
	}
	for _, e := range []struct {
		by  string
		err error
	}{{"write", o.write}, {"read", o.read}, {"read", o.tail}} {
		if connerr.IsReset(e.err) && !c.reset {
			c.reset, c.resetSeenBy, c.err = true, e.by, e.err.Error()
		}
	}
	if !c.reset && o.wireReset {
		c.reset, c.resetSeenBy, c.err = true, "wire", "the socket was reset after the server's FIN, once more data arrived"
	}
	// A FIN is EOF from crypto/tls (with or without close_notify) or from
	// the raw read after an alert, but not every EOF is a FIN: after an RST
	// the error goes to whichever call comes first, and later reads return
	// EOF. Linux reports an RST that follows the peer's FIN as EPIPE (the
	// connection is in CLOSE_WAIT) and one with no FIN before it as
	// ECONNRESET, so an ECONNRESET anywhere means there was no FIN first.
	c.fin = (isEOF(o.read) || isEOF(o.tail)) &&
		!errors.Is(o.read, syscall.ECONNRESET) && !errors.Is(o.tail, syscall.ECONNRESET) &&
		!errors.Is(o.write, syscall.ECONNRESET)

	switch {
	case o.mode == ModeClientCert && c.alert == nil && isSuccess(c.httpStatus):
		c.outcome = HTTPAccepted
		c.err = "the server completed the request (" + c.httpStatus + ") for a client whose certificate " +
			"no trusted CA issued: it accepted the certificate instead of rejecting it"
	case c.alert != nil && c.reset:
		c.outcome = AlertAfterError
	case c.alert != nil:
		c.outcome, c.err = AlertFirst, ""
	case c.httpStatus != "" && c.reset:
		c.outcome = HTTPThenReset
	case c.httpStatus != "":
		c.outcome, c.err = HTTPAnswer, ""
	case c.reset:
		c.outcome = Reset
	case connerr.IsTimeout(o.read):
		c.outcome, c.err = Timeout, "no alert within the trial's timeout"
	default:
		c.outcome, c.err = EOF, errString(o.read)
	}
	if c.alert == nil && c.httpStatus == "" && o.received > 0 && o.mode == ModeClientCert {
		// A server that answers with data took the certificate: there
		// was no rejection to deliver.
		c.err += fmt.Sprintf("; the server sent %d bytes of application data: did it accept the certificate?", o.received)
	}
	c.err = printable(c.err)
	return c
}

// isSuccess reports whether an HTTP status line, as statusLine returns it,
// has a 2xx status: "HTTP/1.1 200 OK".
func isSuccess(status string) bool {
	_, rest, ok := strings.Cut(status, " ")
	return ok && len(rest) >= 3 && rest[0] == '2' && isDigit(rest[1]) && isDigit(rest[2]) &&
		(len(rest) == 3 || rest[3] == ' ')
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// isEOF reports whether err is the server's FIN as a read reports it.
// crypto/tls returns io.EOF both for a close_notify and for a FIN without
// one, and io.ErrUnexpectedEOF for a FIN inside the handshake.
func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// isLocal reports whether a handshake error is this side's doing (crypto/tls
// sends a "local error" alert, or certificate verification failed) rather
// than the server's rejection.
func isLocal(err error) bool {
	if _, ok := alert.FromError(err); ok {
		return false
	}
	return !connerr.IsReset(err) && !isEOF(err) && !connerr.IsTimeout(err)
}

// handshakeError describes a failed handshake for people, with a hint at
// the usual fix. The server's certificate names can appear in the text, so
// it is escaped.
func handshakeError(err error, cancelled bool) string {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
	)
	s := printable(err.Error())
	switch {
	case connerr.IsTimeout(err) || cancelled:
		return "handshake timed out: is this a TLS port?"
	case errors.As(err, &unknown):
		return s + " (give the server's CA with -ca, or -insecure)"
	case errors.As(err, &hostname):
		return s + " (set -servername, or -insecure)"
	}
	return s
}
