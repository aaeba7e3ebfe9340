package main

import (
	"context"
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

	"github.com/linger-go/linger/internal/bytesize"
	"github.com/linger-go/linger/internal/probe"
)

// runProbe is the flag layer of "linger probe"; package internal/probe does
// the work. Exit status: 0 every provocation was answered (an alert, or an
// HTTP error response) with no reset, 1 some answers were lost or had a
// reset behind them, or a server accepted the untrusted client certificate
// and answered 2xx, 2 the command line was wrong (the flag package's status for
// a bad flag), 3 nothing could be provoked.
func runProbe(ctx context.Context, args []string) error {
	return probeMain(ctx, args, os.Stdout, os.Stderr)
}

func probeMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	provoke := fs.String("provoke", string(probe.ModeRecord), "how to provoke the alert: record (a corrupted record after the handshake) or client-cert (an untrusted client certificate)")
	version := fs.String("tls", "", "TLS version to offer: 1.2 or 1.3 (default: both, the server picks)")
	serverName := fs.String("servername", "", "server name for SNI and certificate verification (default: the host)")
	alpn := fs.String("alpn", "", "comma-separated ALPN protocols to offer, such as h2,http/1.1")
	caFile := fs.String("ca", "", "PEM `file` with the CA certificates to verify the server with (default: the system's)")
	insecure := fs.Bool("insecure", false, "do not verify the server's certificate")
	certFile := fs.String("cert", "", "PEM `file` with the client certificate for -provoke client-cert (default: a fresh self-signed one)")
	keyFile := fs.String("key", "", "PEM `file` with the key of -cert")
	trials := fs.Int("trials", probe.DefaultTrials, fmt.Sprintf("number of connections, 1 to %d", probe.MaxTrials))
	timeout := fs.Duration("timeout", probe.DefaultTimeout, "bound on each trial, connecting included")
	interval := fs.Duration("interval", probe.DefaultInterval, "pause between trials (at least 1ms: the probe is polite)")
	watch := fs.Duration("watch", probe.DefaultWatch, "how long to keep sending after the server's FIN, to see whether a reset follows")
	upload := bytesize.Flag(probe.DefaultUpload)
	fs.Var(&upload, "upload", "`size` to keep sending after the provocation, in bytes or such as 64KiB or 1MiB")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of text")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: linger probe [flags] HOST:PORT\n\n"+
			"Asks a TLS server whether its fatal alerts reach a client that is still sending:\n"+
			"each trial provokes an alert, keeps uploading, and reads what arrives.\n"+
			"\nExit status:\n"+
			"  0  every provocation answered (a TLS alert, or an HTTP error response) and no connection reset\n"+
			"  1  some answers lost, or followed by a reset, or the untrusted client certificate accepted (a 2xx answer)\n"+
			"  2  the command line is wrong (bad flag, missing port, unreadable -ca, -cert or -key)\n"+
			"  3  inconclusive: no trial got as far as the provocation (see the trials' errors)\n\n")
		fs.PrintDefaults()
	}

	// Flags may follow the address too, as in "linger probe HOST:PORT -trials 5";
	// the flag package stops at the first argument that is not one.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return exitError(probe.ExitUsage) // the flag package has printed the problem and the usage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	usageErr := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "linger probe: "+format+"\n", a...)
		fs.Usage()
		return exitError(probe.ExitUsage)
	}
	// A file that cannot be read is a usage error too, but the flags'
	// list would bury the one line that matters.
	fileErr := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "linger probe: "+format+"\n", a...)
		return exitError(probe.ExitUsage)
	}
	if len(pos) != 1 {
		return usageErr("want one HOST:PORT, got %d arguments", len(pos))
	}
	if _, port, err := net.SplitHostPort(pos[0]); err != nil || port == "" {
		return usageErr("%q: want HOST:PORT, such as example.com:443 or [::1]:8443", pos[0])
	}
	if *interval < 1e6 {
		return usageErr("-interval %v: want at least 1ms", *interval)
	}
	if *trials < 1 || *trials > probe.MaxTrials {
		return usageErr("-trials %d: want 1 to %d", *trials, probe.MaxTrials)
	}
	if *timeout <= 0 {
		return usageErr("-timeout %v: want a positive duration", *timeout)
	}
	if *watch <= 0 {
		return usageErr("-watch %v: want a positive duration", *watch)
	}
	if upload <= 0 {
		return usageErr("-upload: want a positive size")
	}

	cfg := probe.Config{
		Addr:     pos[0],
		Mode:     probe.Mode(*provoke),
		Upload:   int64(upload),
		Trials:   *trials,
		Timeout:  *timeout,
		Interval: *interval,
		Watch:    *watch,
		TLS:      &tls.Config{ServerName: *serverName, InsecureSkipVerify: *insecure},
	}
	if cfg.Mode != probe.ModeRecord && cfg.Mode != probe.ModeClientCert {
		return usageErr("-provoke %q: want record or client-cert", *provoke)
	}
	switch *version {
	case "":
	case "1.2":
		cfg.TLS.MinVersion, cfg.TLS.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		cfg.TLS.MinVersion, cfg.TLS.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	default:
		return usageErr("-tls %q: want 1.2 or 1.3", *version)
	}
	if *alpn != "" {
		cfg.TLS.NextProtos = strings.Split(*alpn, ",")
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fileErr("-ca: %v", err)
		}
		cfg.TLS.RootCAs = x509.NewCertPool()
		if !cfg.TLS.RootCAs.AppendCertsFromPEM(pem) {
			return fileErr("-ca %s: no PEM certificates in it", *caFile)
		}
	}
	if (*certFile == "") != (*keyFile == "") {
		return usageErr("-cert and -key go together")
	}
	if *certFile != "" {
		if cfg.Mode != probe.ModeClientCert {
			return usageErr("-cert is for -provoke client-cert")
		}
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fileErr("-cert/-key: %v", err)
		}
		cfg.ClientCert = &cert
	}
	if !*asJSON {
		cfg.OnTrial = func(t probe.Trial) { fmt.Fprintln(stdout, probe.FormatTrial(t)) }
	}

	rep, err := probe.Run(ctx, cfg)
	if rep == nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // error texts hold "->", for people and jq alike
		if werr := enc.Encode(rep); werr != nil {
			return werr
		}
	} else if werr := rep.WriteSummary(stdout); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("interrupted after %d trials: %w", len(rep.Trials), err)
	}
	if code := rep.ExitCode(); code != 0 {
		return exitError(code)
	}
	return nil
}
