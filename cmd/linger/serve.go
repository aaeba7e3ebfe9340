package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/linger-go/linger"
	"github.com/linger-go/linger/internal/pki"
)

// runServe runs a TLS server that requires client certificates from its own
// throw-away CA, so that any other certificate is rejected with an alert, and
// prints the curl commands to see the difference linger makes.
func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8443", "address to listen on (loopback only by design)")
	dir := fs.String("dir", "", "directory for the generated certificates and keys (default: a new temporary one)")
	plain := fs.Bool("plain", false, "close connections at once, as Go does by default, for comparison")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: linger serve [flags]\n\n"+
			"Runs an HTTPS server that requires a client certificate and rejects any other,\n"+
			"lingering on close unless -plain, and prints curl commands to try it. It stops\n"+
			"on Ctrl-C or SIGTERM, and on Linux also when the process that started it exits\n"+
			"(so that \"go run ./cmd/linger serve &\" and then \"kill $!\" stops it).\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageErr("serve", fmt.Errorf("unexpected arguments %q: serve takes only flags", fs.Args()))
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return usageErr("serve", fmt.Errorf("-addr: %w", err))
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return usageErr("serve", fmt.Errorf("-addr %s: the example server listens on loopback only", *addr))
	}
	if err := exitWithParent(); err != nil {
		return err
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "linger-serve-"); err != nil {
			return err
		}
		defer os.RemoveAll(*dir)
	} else if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	ca, err := pki.NewPKI()
	if err != nil {
		return err
	}
	files, err := ca.WriteFiles(*dir)
	if err != nil {
		return err
	}
	body := *dir + "/upload"
	if err := os.WriteFile(body, make([]byte, 1<<20), 0o600); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	lc, err := linger.New(linger.Config{OnClose: func(r linger.Report) {
		// Unacked alone is no failure (a client that closed resets our
		// close_notify); Undelivered is.
		word := "last word delivered"
		if r.Undelivered() {
			word = fmt.Sprintf("last word NOT delivered (%d bytes unacknowledged)", r.Unacked)
		}
		log.Printf("closed %v: %v after %v, %d bytes discarded, %s",
			r.RemoteAddr, r.Outcome, r.Held.Round(time.Microsecond), r.Discarded, word)
	}})
	if err != nil {
		return err
	}
	if !*plain {
		ln = lc.Listener(ln)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "hello %s, got %d bytes\n", r.TLS.PeerCertificates[0].Subject.CommonName, n)
		}),
		TLSConfig: ca.ServerConfig(0),
		ErrorLog:  log.New(os.Stderr, "http: ", log.LstdFlags),
	}
	mode := "lingering close"
	if *plain {
		mode = "plain close (Go's default)"
	}
	fmt.Printf("listening on https://%s with %s; certificates in %s\n\n", ln.Addr(), mode, *dir)
	expect := `look for "alert unknown ca"`
	if *plain {
		// Go's plain close resets the connection under the unread upload,
		// and the reset destroys the alert: curl reports the reset
		// (typically "getpeername() errno 107" or "Connection reset by
		// peer") instead of the reason.
		expect = `the plain close resets it: curl reports a reset, such as "getpeername() errno 107" or "Connection reset by peer", not "alert unknown ca"`
	}
	fmt.Printf("A rejected certificate while uploading 1 MiB (%s):\n\n"+
		"  curl -sS --cacert %s --cert %s --key %s --data-binary @%s https://%s/\n\n",
		expect, files.CA, files.UntrustedCert, files.UntrustedKey, body, ln.Addr())
	fmt.Printf("An accepted one:\n\n  curl -sS --cacert %s --cert %s --key %s --data-binary @%s https://%s/\n\n",
		files.CA, files.ClientCert, files.ClientKey, body, ln.Addr())
	fmt.Printf("Stop with Ctrl-C.\n\n")

	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = errors.Join(srv.Shutdown(sctx), lc.Shutdown(sctx))
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
