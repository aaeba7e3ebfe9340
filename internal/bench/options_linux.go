//go:build linux

package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/linger-go/linger/internal/bytesize"
)

// options is a checked command line of "linger bench": what to measure and
// at what size.
type options struct {
	what       string // a benchmark's name, or "all"
	smokeSized bool   // -smoke: CI's tiny sizes
	jsonOut    string // also write the results as JSON to this file
	cpuProfile string // write this process's CPU profile to this file

	held  heldFlags
	modes []string // held and hold: loop, portable, naive
	hold  holdFlags

	flood       floodFlags   // the sizes of every round
	floods      []floodFlags // one per -clients kind: flood's sizes and the kind
	floodRounds int
	floodModes  []string // each round's server modes, in order

	pin      pinFlags
	pinModes []string

	happy happyFlags
}

// holdFlags sizes "hold".
type holdFlags struct {
	n, c int // connections in all, and at once
}

// parseOptions reads the command line of "linger bench" and checks all of
// it, so that a mistyped flag or mode fails at once and not after the
// benchmarks before it have run for minutes. The usage and the flag
// package's messages go to out. The error is flag.ErrHelp for -h, ErrUsage
// itself when the flag package has printed the problem, and otherwise an
// error that matches ErrUsage and names the flag at fault.
func parseOptions(args []string, out io.Writer) (*options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(out)
	smoke := fs.Bool("smoke", false, "tiny sizes for CI: \"all\" takes about 40 s on an idle 2-core machine, more under load")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write this process's CPU profile to this file")

	o.held.register(fs, 15000)
	modes := fs.String("modes", "loop,portable,naive", "held and hold: modes to run")
	fs.IntVar(&o.hold.n, "hold-n", 5000, "hold: connections in all")
	fs.IntVar(&o.hold.c, "hold-c", 16, "hold: connections at once")

	fs.DurationVar(&o.flood.d, "d", 2*time.Second, "flood: measured time per mode and round")
	fs.DurationVar(&o.flood.warm, "warm", 500*time.Millisecond, "flood: warm-up before each measurement, not counted")
	fs.IntVar(&o.flood.workers, "workers", 64, "flood: client connections at once")
	fs.IntVar(&o.flood.procs, "procs", 2, "flood: client processes")
	fs.IntVar(&o.flood.cap, "cap", 32, "flood: Config.MaxConns (the cap on lingering sockets)")
	fs.IntVar(&o.floodRounds, "rounds", 6, "flood: rounds per kind of client; a round runs each of -flood-modes once, in reverse order every other round")
	floodModes := fs.String("flood-modes", "plain,linger", "flood: server modes of each round, in order: plain, linger, linger-nopressure (PressureDiscard off), linger-pdSIZE (PressureDiscard SIZE, e.g. linger-pd64k), linger-norb (no receive-buffer clamp under pressure), linger-rbSIZE (clamp to SIZE), linger-nohold (pressure ends as soon as lingering falls below its mark), linger-rball (clamp without pressure too), linger-noinq (under pressure, Close reads a peer already past its budget instead of asking SIOCINQ)")
	kinds := fs.String("clients", "upload-1k,upload-1m,cooperative,deaf",
		"flood: client kinds: upload-SIZE (write SIZE bytes, e.g. 1k or 1m, then read), cooperative (write flat out while reading, stop at the alert), deaf (write flat out, never read)")

	fs.IntVar(&o.pin.n, "pin-n", 4608, "pin: attacking connections")
	fs.IntVar(&o.pin.resp, "pin-resp", 1<<20, "pin: response bytes the server tries to write to each")
	fs.DurationVar(&o.pin.write, "pin-write", 300*time.Millisecond, "pin: the server's write timeout")
	// The kernel doubles SO_SNDBUF: 64 KiB lets about 100 KiB queue per
	// socket, so 4,608 sockets stay below tcp_mem's pressure threshold,
	// which is global: autotuning would queue the whole 1 MiB on each,
	// 4.6 GB, and starve every other TCP user of the machine.
	fs.IntVar(&o.pin.sndbuf, "pin-sndbuf", 64<<10, "pin: the server's SO_SNDBUF (0: the kernel's autotuning)")
	fs.DurationVar(&o.pin.d, "pin-d", 40*time.Second, "pin: how long to watch each mode (past MaxHold)")
	fs.IntVar(&o.pin.perIP, "pin-perip", 256, "pin: MaxConnsPerIP in the linger-perip mode")
	pinModes := fs.String("pin-modes", "plain,linger,linger-noperip", "pin: modes to run: plain, linger (the defaults), linger-perip (MaxConnsPerIP -pin-perip), linger-noperip (no per-IP cap)")

	o.happy.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, ErrUsage // the flag package has printed the problem and the usage
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return nil, usageError("say what to measure: %s", benchmarkNames())
	}
	if err := checkFlags([]intFlag{
		{"n", o.held.n, 1}, {"peers", o.held.peers, 1}, {"srcs", o.held.srcs, 1},
		{"hold-n", o.hold.n, 1}, {"hold-c", o.hold.c, 1},
		{"workers", o.flood.workers, 1}, {"procs", o.flood.procs, 1}, {"cap", o.flood.cap, 1}, {"rounds", o.floodRounds, 1},
		{"pin-n", o.pin.n, 1}, {"pin-resp", o.pin.resp, 1}, {"pin-sndbuf", o.pin.sndbuf, 0}, {"pin-perip", o.pin.perIP, 1},
		{"happy-c", o.happy.conns, 1}, {"happy-rounds", o.happy.rounds, 1},
	}, []durFlag{
		{"d", o.flood.d, false}, {"warm", o.flood.warm, true},
		{"pin-write", o.pin.write, false}, {"pin-d", o.pin.d, false},
		{"happy-d", o.happy.d, false},
	}); err != nil {
		return nil, err
	}
	o.what = fs.Arg(0)
	if o.what != "all" && !slices.ContainsFunc(benchmarks, func(b benchmark) bool { return b.name == o.what }) {
		fs.Usage()
		return nil, usageError("unknown benchmark %q: %s", o.what, benchmarkNames())
	}

	var err error
	if o.modes, err = listFlag("modes", *modes, "loop", "portable", "naive"); err != nil {
		return nil, err
	}
	if o.pinModes, err = listFlag("pin-modes", *pinModes, "plain", "linger", "linger-perip", "linger-noperip"); err != nil {
		return nil, err
	}
	if o.floodModes, err = floodModeList(*floodModes); err != nil {
		return nil, err
	}
	for _, c := range o.happy.clients {
		if _, ok := happyClients[c]; !ok {
			return nil, usageError("-happy-clients: unknown client %q: want %s", c, strings.Join(slices.Sorted(maps.Keys(happyClients)), ", "))
		}
	}
	if o.smokeSized = *smoke; o.smokeSized {
		o.smoke()
	}
	// After the smoke sizes: each client's rounds take o.flood's.
	o.flood.srcs = o.held.srcs
	if o.floods, err = floodClients(*kinds, o.flood); err != nil {
		return nil, err
	}
	return &o, nil
}

// smoke shrinks every benchmark to a few seconds, about 40 s for "all"
// (36 s measured on an idle 2-core machine), for CI. It overrides the sizes and pin modes given on the command
// line, which have been checked all the same.
func (o *options) smoke() {
	o.held.n, o.held.peers = 400, 2
	o.hold = holdFlags{n: 400, c: 8}
	o.flood.d, o.flood.warm, o.flood.workers, o.floodRounds = 500*time.Millisecond, 200*time.Millisecond, 8, 1
	o.flood.cap = 4
	o.pin.n, o.pin.d, o.pin.maxHold, o.pin.perIP = 200, 4*time.Second, 2*time.Second, 16
	o.pinModes = []string{"plain", "linger", "linger-perip"}
	o.happy.smoke()
}

// benchmarkNames lists what "linger bench" can measure, for its messages.
func benchmarkNames() string {
	var names []string
	for _, b := range benchmarks {
		names = append(names, b.name)
	}
	return strings.Join(names, ", ") + " or all"
}

// floodClients reads -clients: one floodFlags for each kind of client in
// the comma-separated list, based on fl.
func floodClients(list string, fl floodFlags) ([]floodFlags, error) {
	var fs []floodFlags
	for _, kind := range strings.Split(list, ",") {
		f := fl
		f.name, f.kind = kind, kind
		if size, ok := strings.CutPrefix(kind, "upload-"); ok {
			f.kind = kindUpload
			n, err := bytesize.Parse(size)
			if err != nil {
				return nil, usageError("-clients %s: %v", kind, err)
			}
			f.body = int(n)
		}
		if !knownKind(f.kind) {
			return nil, usageError("-clients: unknown client kind %q: want upload-SIZE, %s or %s", kind, kindCooperative, kindDeaf)
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// floodModeList reads -flood-modes: plain, linger, linger-nopressure,
// linger-pdSIZE, linger-norb, linger-rbSIZE, linger-nohold, linger-rball and linger-noinq, the sizes as
// bytesize.Parse reads them.
func floodModeList(list string) ([]string, error) {
	modes := strings.Split(list, ",")
	for _, m := range modes {
		switch m {
		case "plain", "linger", "linger-nopressure", "linger-norb", "linger-nohold", "linger-rball", "linger-noinq":
			continue
		}
		size, ok := strings.CutPrefix(m, "linger-pd")
		if !ok {
			size, ok = strings.CutPrefix(m, "linger-rb")
		}
		if ok {
			if _, err := bytesize.Parse(size); err != nil {
				return nil, usageError("-flood-modes %s: %v", m, err)
			}
			continue
		}
		return nil, usageError("-flood-modes: unknown mode %q: want plain, linger, linger-nopressure, linger-pdSIZE, linger-norb, linger-rbSIZE, linger-nohold, linger-rball or linger-noinq", m)
	}
	return modes, nil
}

// listFlag splits a comma-separated flag value and checks each item against
// known, so that a mistyped mode fails before any benchmark runs.
func listFlag(name, list string, known ...string) ([]string, error) {
	items := strings.Split(list, ",")
	for _, it := range items {
		if !slices.Contains(known, it) {
			return nil, usageError("-%s: unknown mode %q: want %s", name, it, strings.Join(known, ", "))
		}
	}
	return items, nil
}
