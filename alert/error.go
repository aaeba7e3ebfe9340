package alert

import (
	"crypto/tls"
	"errors"
	"net"
	"reflect"
	"strings"
	"sync"
)

// Error is a fatal TLS alert received from the peer.
//
// Callers match it with errors.As. Err is the error the connection actually
// returned, so errors.Is and errors.As keep finding what they found without
// this package: syscall.ECONNRESET, syscall.EPIPE, net.ErrClosed or the
// *net.OpError of the failed write.
//
// Over TCP, crypto/tls itself reports a received alert as a *net.OpError
// with Op "remote error" around an unexported type; [FromError] turns that
// into an *Error. (tls.AlertError is only used with QUIC.)
type Error struct {
	// Code is the alert's AlertDescription value (RFC 8446, section 6.2),
	// such as 42 for bad_certificate or 48 for unknown_ca.
	Code uint8

	// Description is the alert as crypto/tls describes it, such as
	// "unknown certificate authority".
	Description string

	// Err is the error the connection returned: the alert itself as
	// crypto/tls reported it, or the transport error that followed it.
	Err error
}

// Error returns crypto/tls's text for the alert, followed by the transport
// error if that is what the connection returned, as in
// "remote error: tls: unknown certificate authority; write tcp ...: broken pipe".
func (e *Error) Error() string {
	s := "remote error: tls: " + e.Description
	if e.Err == nil {
		return s
	}
	if code, ok := remoteAlert(e.Err); ok && code == e.Code {
		return e.Err.Error() // the alert itself, in crypto/tls's words
	}
	return s + "; " + e.Err.Error()
}

// Unwrap returns e.Err.
func (e *Error) Unwrap() error { return e.Err }

// FromError reports the TLS alert received from the peer that err carries:
// an *Error anywhere in err's chain, or else crypto/tls's own report of a
// received alert, returned as a new *Error whose Err is err. It returns
// false for any other error, including alerts this side sent
// (crypto/tls's "local error").
func FromError(err error) (*Error, bool) {
	if err == nil {
		return nil, false
	}
	var ae *Error
	if errors.As(err, &ae) {
		return ae, true
	}
	code, ok := remoteAlert(err)
	if !ok {
		return nil, false
	}
	return newError(code, err), true
}

func newError(code uint8, err error) *Error {
	return &Error{Code: code, Description: describe(code), Err: err}
}

// describe returns crypto/tls's description of an alert code.
func describe(code uint8) string {
	return strings.TrimPrefix(tls.AlertError(code).Error(), "tls: ")
}

// remoteAlert finds, in err's chain, the *net.OpError with Op "remote
// error" that crypto/tls returns for a received alert, and returns the
// alert's code.
func remoteAlert(err error) (uint8, bool) {
	for depth := 0; err != nil && depth < 64; depth++ {
		if op, ok := err.(*net.OpError); ok && op.Op == "remote error" && op.Err != nil {
			if code, ok := alertCode(op.Err); ok {
				return code, true
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if code, ok := remoteAlert(e); ok {
					return code, true
				}
			}
			return 0, false
		default:
			return 0, false
		}
	}
	return 0, false
}

// alertCode extracts the code from the error crypto/tls puts in a remote
// error: its unexported alert type, a uint8 (crypto/tls/alert.go). The text
// fallback keeps working should that type change but its text not.
func alertCode(e error) (uint8, bool) {
	if a, ok := e.(tls.AlertError); ok {
		return uint8(a), true
	}
	if v := reflect.ValueOf(e); v.Kind() == reflect.Uint8 && v.Type().PkgPath() == "crypto/tls" {
		return uint8(v.Uint()), true
	}
	code, ok := alertTexts()[e.Error()]
	return code, ok
}

// alertTexts maps crypto/tls's text for each alert code back to the code.
var alertTexts = sync.OnceValue(func() map[string]uint8 {
	m := make(map[string]uint8, 256)
	for c := 255; c >= 0; c-- {
		m[tls.AlertError(c).Error()] = uint8(c)
	}
	return m
})
