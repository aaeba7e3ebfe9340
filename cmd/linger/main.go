// Command linger shows, on one machine, that a lingering close delivers a
// server's last word where a plain close destroys it.
//
// Usage:
//
//	linger lab [flags]            run the matrix of scenarios, strategies, clients and networks
//	linger probe [flags] HOST:PORT  ask a TLS server whether its fatal alerts reach a client still sending
//	linger serve [flags]          run an example TLS server that rejects client certificates and lingers
//	linger bench [flags] WHAT     measure the engine's cost
//	linger watch [flags]          count, passively per server port, the last words lost to resets
//	linger version                print the module version and VCS revision (also --version)
//
// Run "linger COMMAND -h" for a command's flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

var commands = []command{
	{"lab", "run the matrix of scenarios, strategies, clients and networks", runLab},
	{"probe", "ask a TLS server whether its fatal alerts reach a client still sending", runProbe},
	{"serve", "run an example TLS server that rejects client certificates and lingers", runServe},
	{"bench", "measure the engine's cost", runBench},
	{"watch", "count, passively per server port, the last words lost to resets", runWatch},
	{"version", "print the module version and VCS revision (also --version)", runVersion},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: linger COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-7s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun \"linger COMMAND -h\" for a command's flags.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	// Ctrl-C and SIGTERM cancel the context: every command cleans up what
	// it made (namespaces, rules, processes) before it exits.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands {
		if c.name == os.Args[1] {
			err := c.run(ctx, os.Args[2:])
			if errors.Is(err, flag.ErrHelp) {
				os.Exit(0)
			}
			var ex exitError
			if errors.As(err, &ex) {
				os.Exit(int(ex))
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "linger %s: %v\n", c.name, err)
				os.Exit(1)
			}
			return
		}
	}
	if a := os.Args[1]; a == "--version" || a == "-version" {
		if err := runVersion(ctx, os.Args[2:]); err != nil {
			os.Exit(2)
		}
		return
	}
	if a := os.Args[1]; a == "-h" || a == "-help" || a == "--help" || a == "help" {
		usage()
		return
	}
	fmt.Fprintf(os.Stderr, "linger: unknown command %q\n", os.Args[1])
	usage()
	os.Exit(2)
}

// exitError is returned by a command that has already printed its result
// and wants a particular exit status (probe: 1 when an alert was lost).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageErr prints a command's complaint about its command line and returns
// exit status 2, as for the flag package's own errors.
func usageErr(cmd string, err error) error {
	fmt.Fprintf(os.Stderr, "linger %s: %v\n", cmd, err)
	return exitError(2)
}

// parseFlags parses args into fs. An error from the flag package, which has
// already printed it and the usage, becomes exit status 2; -h stays
// flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		return exitError(2)
	}
	return err
}
