package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/linger-go/linger/internal/lab"
	"github.com/linger-go/linger/internal/netns"
)

// runLab parses the lab's flags and runs internal/lab.
func runLab(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "few trials per cell, for CI (about 30 s as root, 20 s without)")
	trials := fs.Int("trials", 0, "trials per cell (default: 100 on loopback, 50 for tls13-1k, 40 for tls12, midstream and in namespaces; 10 with -quick)")
	scenario := fs.String("scenario", "", "comma-separated scenarios (default all): "+strings.Join(ids(lab.Scenarios), ", "))
	client := fs.String("client", "", "comma-separated clients (default all): "+strings.Join(lab.Clients, ", "))
	strategy := fs.String("strategy", "", "comma-separated server close strategies (default all): "+strings.Join(lab.Strategies, ", "))
	network := fs.String("net", "", "comma-separated networks (default all): loopback, netns (needs root)")
	rtt := fs.Duration("rtt", 2*lab.DefaultPath.Delay, "round-trip delay of the namespaces' path (0: a veth pair)")
	loss := fs.String("loss", fmt.Sprintf("%g%%", lab.DefaultPath.Loss*100), "packet loss of the namespaces' path in each direction")
	parallel := fs.Int("parallel", 0, "trials of a cell run at once (default: chosen per cell)")
	jsonOut := fs.String("json", "", "write the results as JSON to `FILE`")
	htmlOut := fs.String("html", "", "write an HTML report with charts to `FILE`")
	cells := fs.Bool("cells", false, "also print every cell with its evidence (server RSTs, hold times, errors): a table wider than 100 columns")
	check := fs.Bool("check", false, "exit 1 if linger delivers in under 99% of a cell or the immediate close stops showing the failure")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: linger lab [flags]\n\n"+
			"Runs scenarios x server close strategies x clients x networks, many trials a cell, and\n"+
			"prints how often the client got the server's last word: a one-line verdict, then the\n"+
			"table. Namespaces need root.\n\n"+
			"How long: the full run takes about 2 to 3.5 minutes as root on 2 CPUs (124 cells; 108 s\n"+
			"idle, 198 s while other work ran), about a minute without root (loopback only);\n"+
			"-quick about 30 s. Progress is one line on a terminal, a line per cell otherwise.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("lab", fmt.Errorf("unexpected arguments %q: lab takes only flags", fs.Args()))
	}
	lossFrac, err := parseLoss(*loss)
	if err != nil {
		return usageErr("lab", err)
	}
	for _, f := range []struct {
		name string
		neg  bool
	}{{"rtt", *rtt < 0}, {"trials", *trials < 0}, {"parallel", *parallel < 0}} {
		if f.neg {
			return usageErr("lab", fmt.Errorf("-%s %s: must not be negative", f.name, fs.Lookup(f.name).Value))
		}
	}
	o := lab.Options{
		Quick:      *quick,
		Trials:     *trials,
		Networks:   split(*network),
		Scenarios:  split(*scenario),
		Clients:    split(*client),
		Strategies: split(*strategy),
		Path:       &netns.PathConfig{Delay: *rtt / 2, Loss: lossFrac},
		Parallel:   *parallel,
		Progress:   os.Stderr,
		Live:       isTerminal(os.Stderr),
		Command:    "linger lab " + strings.Join(args, " "),
	}
	rep, runErr := lab.Run(ctx, o)
	if rep == nil {
		return runErr
	}
	if *check {
		rep.Check = lab.Evaluate(rep)
	}
	if *cells {
		rep.WriteCells(os.Stdout)
	}
	rep.WriteTable(os.Stdout)
	if *jsonOut != "" {
		if err := rep.WriteJSON(*jsonOut); err != nil {
			return err
		}
	}
	if *htmlOut != "" {
		if err := rep.WriteHTML(*htmlOut); err != nil {
			return err
		}
	}
	if runErr != nil {
		return runErr
	}
	if rep.Check != nil {
		rep.Check.Write(os.Stdout)
		if !rep.Check.OK {
			return exitError(1)
		}
	}
	return nil
}

func ids(scs []lab.Scenario) []string {
	var out []string
	for _, s := range scs {
		out = append(out, s.ID)
	}
	return out
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// parseLoss accepts "5%", "5" (percent) or "0.05".
func parseLoss(s string) (float64, error) {
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || math.IsNaN(v) {
		return 0, fmt.Errorf("-loss %q: not a loss rate; give a percentage such as 5%% or a fraction such as 0.05", s)
	}
	if pct || v > 1 {
		v /= 100
	}
	if v < 0 || v > 1 {
		return 0, fmt.Errorf("-loss %q: not between 0%% and 100%%", s)
	}
	return v, nil
}

// isTerminal reports whether f is a character device, where the lab redraws
// its progress line in place.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
