package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// runVersion prints what the binary was built from, as the go command
// recorded it: the module's version ("(devel)" for a build in a clone,
// v1.2.3 for one installed with go install …@v1.2.3, a pseudo-version for
// one at a commit), the VCS revision and time with "+dirty" for a tree with
// changes (recorded only by go build or go install in a clone, not by go
// run), and the Go version.
func runVersion(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: linger version\n\n"+
			"Prints linger's module version, the VCS revision it was built from (when the\n"+
			"go command recorded one), and the Go version.\n")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageErr("version", fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return fmt.Errorf("no build information in this binary")
	}
	printVersion(os.Stdout, bi)
	return nil
}

// printVersion writes one line, such as
// "linger (devel) rev 45f5e40a1b2c+dirty 2026-12-07T07:00:00Z go1.26.8".
func printVersion(w io.Writer, bi *debug.BuildInfo) {
	var b strings.Builder
	b.WriteString("linger ")
	b.WriteString(bi.Main.Version)
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		b.WriteString(" rev ")
		b.WriteString(rev[:min(len(rev), 12)])
		if settings["vcs.modified"] == "true" {
			b.WriteString("+dirty")
		}
		if t := settings["vcs.time"]; t != "" {
			b.WriteString(" ")
			b.WriteString(t)
		}
	}
	b.WriteString(" ")
	b.WriteString(bi.GoVersion)
	fmt.Fprintln(w, b.String())
}
