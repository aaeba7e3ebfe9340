// Package connerr says what a failed connection's error means to the client
// that got it: a reset, a timeout, or, in a word or two for the tallies of
// the lab, the benchmarks and the tests, whatever distinguishes it from the
// others (an alert, a reset, a broken pipe, curl's "errno 107" ...).
package connerr

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/linger-go/linger/alert"
)

// IsReset reports whether err says the peer reset the connection: the first
// write or read after an RST returns ECONNRESET, later writes EPIPE (and so
// does the first write when the RST came after the peer's FIN).
func IsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// IsTimeout reports whether err is a deadline that passed: a connection's
// or a context's.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// Name names err by what distinguishes it from the other errors a client
// gets when a server closes on it: the TLS alert if err carries one,
// otherwise as NameText names its text; "no error" for nil.
func Name(err error) string {
	if err == nil {
		return "no error"
	}
	if ae, ok := alert.FromError(err); ok {
		return "alert " + ae.Description
	}
	return NameText(err.Error())
}

// names maps what an error's text contains to its name, first match first:
// Go's errors, OpenSSL's and curl's say the same things in different words.
var names = []struct{ sub, name string }{
	{"alert unknown ca", "alert unknown ca"},
	{"alert bad certificate", "alert bad certificate"},
	{"alert", "alert"},
	{"connection reset by peer", "connection reset"},
	{"Connection reset by peer", "connection reset"},
	{"errno=104", "connection reset"},
	{"broken pipe", "broken pipe"},
	{"Broken pipe", "broken pipe"},
	{"errno=32", "broken pipe"},
	{"use of closed network connection", "use of closed network connection"},
	{"errno 107", "getpeername: not connected"},
	{"Send failure", "send failure"},
	{"Recv failure", "recv failure"},
	{"connection refused", "connection refused"},
	{"cannot assign requested address", "cannot assign requested address"},
	{"unexpected EOF", "unexpected EOF"},
	{"EOF", "EOF"},
	{"timeout", "timeout"},
	{"Timeout", "timeout"},
	{"deadline exceeded", "timeout"},
}

// NameText names an error from its text, as a client program printed it:
// the name of the first known phrase it contains, or the text itself cut to
// 60 bytes (on a character boundary).
func NameText(s string) string {
	for _, k := range names {
		if strings.Contains(s, k.sub) {
			return k.name
		}
	}
	if len(s) > 60 {
		i := 60
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i] + "…"
	}
	return s
}
