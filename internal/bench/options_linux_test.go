//go:build linux

package bench

import (
	"bytes"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestParseOptionsErrors: every bad command line fails in parseOptions,
// before any benchmark runs, with an error that matches ErrUsage (which
// cmd/linger turns into exit status 2) and names the flag at fault.
func TestParseOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		args string
		want string // in the error, or in the flag package's output if the error is ErrUsage itself
	}{
		{"", "say what to measure: held, hold, flood, pin, happy or all"},
		{"held hold", "say what to measure"},
		{"nothing", `unknown benchmark "nothing"`},
		{"-n -5 all", "-n -5: must be at least 1"},
		{"-peers 0 held", "-peers 0: must be at least 1"},
		{"-srcs 0 hold", "-srcs 0: must be at least 1"},
		{"-hold-n 0 hold", "-hold-n 0: must be at least 1"},
		{"-hold-c 0 hold", "-hold-c 0: must be at least 1"},
		{"-d 0 flood", "-d 0s: must be positive"},
		{"-warm -1s flood", "-warm -1s: must be positive"},
		{"-workers 0 flood", "-workers 0: must be at least 1"},
		{"-procs 0 flood", "-procs 0: must be at least 1"},
		{"-cap 0 flood", "-cap 0: must be at least 1"},
		{"-rounds 0 flood", "-rounds 0: must be at least 1"},
		{"-pin-n 0 pin", "-pin-n 0: must be at least 1"},
		{"-pin-resp -1 pin", "-pin-resp -1: must be at least 1"},
		{"-pin-sndbuf -1 pin", "-pin-sndbuf -1: must be at least 0"},
		{"-pin-perip 0 pin", "-pin-perip 0: must be at least 1"},
		{"-pin-write 0 pin", "-pin-write 0s: must be positive"},
		{"-pin-d -1s pin", "-pin-d -1s: must be positive"},
		{"-happy-c 0 happy", "-happy-c 0: must be at least 1"},
		{"-happy-rounds 0 happy", "-happy-rounds 0: must be at least 1"},
		{"-happy-d 0 happy", "-happy-d 0s: must be positive"},
		{"-modes loop,portible hold", `-modes: unknown mode "portible"`},
		{"-pin-modes linger,plane pin", `-pin-modes: unknown mode "plane"`},
		{"-flood-modes plain,lingr flood", `-flood-modes: unknown mode "lingr"`},
		{"-flood-modes plain, flood", `-flood-modes: unknown mode ""`},
		{"-flood-modes linger-pd64x flood", `-flood-modes linger-pd64x: unknown unit "x"`},
		{"-flood-modes linger-pd flood", "-flood-modes linger-pd: not a size"},
		{"-clients cooperative,deafy flood", `-clients: unknown client kind "deafy"`},
		{"-clients upload-1x flood", `-clients upload-1x: unknown unit "x"`},
		{"-happy-clients wrk-close,wrk happy", `-happy-clients: unknown client "wrk"`},
		// Checked although -smoke replaces the pin modes.
		{"-smoke -pin-modes plane all", `-pin-modes: unknown mode "plane"`},
		// The flag package's own errors, printed by it.
		{"-nosuchflag all", "-nosuchflag"},
		{"-n many all", `invalid value "many" for flag -n`},
	} {
		t.Run(tc.args, func(t *testing.T) {
			var out bytes.Buffer
			o, err := parseOptions(strings.Fields(tc.args), &out)
			if err == nil {
				t.Fatalf("no error, options %+v; want one saying %q", o, tc.want)
			}
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("error %q does not match ErrUsage", err)
			}
			msg := err.Error()
			if err == ErrUsage {
				msg = out.String()
			}
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, output:\n%s\nwant %q", err, out.String(), tc.want)
			}
		})
	}
}

// TestParseOptionsHelp: -h is not a usage error (cmd/linger exits 0) and
// prints the usage.
func TestParseOptionsHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseOptions([]string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) || errors.Is(err, ErrUsage) {
		t.Errorf("-h: error %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(out.String(), "usage: linger bench") || !strings.Contains(out.String(), "-flood-modes") {
		t.Errorf("-h printed:\n%s\nwant the usage and the flags", out.String())
	}
}

// TestParseOptionsBenchmarks: every benchmark the usage text documents is
// accepted, and every benchmark Main runs is documented.
func TestParseOptionsBenchmarks(t *testing.T) {
	// The usage lists each WHAT indented by two spaces, its description
	// after.
	_, list, _ := strings.Cut(usage, "WHAT is one of:\n")
	list, _, _ = strings.Cut(list, "\n\n")
	var documented []string
	for _, l := range strings.Split(list, "\n") {
		if name, ok := strings.CutPrefix(l, "  "); ok && !strings.HasPrefix(name, " ") {
			documented = append(documented, strings.Fields(name)[0])
		}
	}
	if !slices.Contains(documented, "all") || len(documented) < 2 {
		t.Fatalf("read %q as the benchmarks in the usage text", documented)
	}
	for _, name := range documented {
		o, err := parseOptions([]string{name}, &bytes.Buffer{})
		if err != nil || o.what != name {
			t.Errorf("%s, in the usage text: options %+v, error %v", name, o, err)
		}
	}
	for _, b := range benchmarks {
		if !slices.Contains(documented, b.name) {
			t.Errorf("benchmark %q is not in the usage text", b.name)
		}
	}
}

// TestParseOptions: what the command line sets, with and without -smoke.
func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		args  string
		check func(*options) string // what is wrong, or ""
	}{
		{"all", func(o *options) string {
			switch {
			case o.held != heldFlags{n: 15000, peers: 2, srcs: 8}:
				return "held sizes"
			case o.hold != holdFlags{n: 5000, c: 16}:
				return "hold sizes"
			case !slices.Equal(o.modes, []string{"loop", "portable", "naive"}):
				return "modes"
			case !slices.Equal(o.floodModes, []string{"plain", "linger"}) || o.floodRounds != 6 || o.flood.d != 2*time.Second || o.flood.warm != 500*time.Millisecond:
				return "flood modes or rounds"
			case !slices.Equal(o.pinModes, []string{"plain", "linger", "linger-noperip"}):
				return "pin modes"
			case len(o.floods) != 4:
				return "flood clients"
			case o.pin.n != 4608 || o.pin.maxHold != 0 || o.pin.sndbuf != 64<<10:
				return "pin sizes"
			case o.happy.d != 2*time.Second || o.happy.rounds != 4 || len(o.happy.clients) != 3 || o.happy.pin || o.smokeSized:
				return "happy sizes"
			}
			return ""
		}},
		{"-flood-modes plain,linger-rball,linger-rb4k,linger-norb,linger-nohold,linger-noinq flood", func(o *options) string {
			if !slices.Equal(o.floodModes, []string{"plain", "linger-rball", "linger-rb4k", "linger-norb", "linger-nohold", "linger-noinq"}) {
				return "flood modes"
			}
			return ""
		}},
		{"-srcs 3 -d 2s -clients upload-1m,deaf -flood-modes linger-pd64k,linger-nopressure,plain flood", func(o *options) string {
			want := []floodFlags{
				{d: 2 * time.Second, warm: 500 * time.Millisecond, workers: 64, procs: 2, cap: 32, srcs: 3, name: "upload-1m", kind: kindUpload, body: 1 << 20},
				{d: 2 * time.Second, warm: 500 * time.Millisecond, workers: 64, procs: 2, cap: 32, srcs: 3, name: "deaf", kind: kindDeaf},
			}
			switch {
			case !slices.Equal(o.floods, want):
				return "flood clients"
			case !slices.Equal(o.floodModes, []string{"linger-pd64k", "linger-nopressure", "plain"}):
				return "flood modes"
			}
			return ""
		}},
		// -smoke overrides the sizes given, and the clients' rounds take
		// the smoke sizes.
		{"-smoke -n 9 -d 1m -pin-modes plain -happy-d 1m all", func(o *options) string {
			switch {
			case o.held.n != 400 || o.hold != holdFlags{n: 400, c: 8}:
				return "held or hold sizes"
			case o.flood.d != 500*time.Millisecond || o.floodRounds != 1 || o.flood.cap != 4:
				return "flood sizes"
			case len(o.floods) != 4 || o.floods[0].d != 500*time.Millisecond || o.floods[3].workers != 8:
				return "the flood clients' sizes"
			case !slices.Equal(o.pinModes, []string{"plain", "linger", "linger-perip"}) || o.pin.maxHold != 2*time.Second:
				return "pin modes or sizes"
			case o.happy.d != time.Second || o.happy.rounds != 1:
				return "happy sizes"
			case !o.smokeSized:
				return "smoke, for the summary"
			}
			return ""
		}},
		{"-json /tmp/x.json -cpuprofile /tmp/x.prof -happy-clients h2load -happy-pin -modes naive hold", func(o *options) string {
			switch {
			case !o.happy.pin:
				return "-happy-pin"
			case o.jsonOut != "/tmp/x.json" || o.cpuProfile != "/tmp/x.prof":
				return "output files"
			case !slices.Equal(o.happy.clients, []string{"h2load"}) || !slices.Equal(o.modes, []string{"naive"}):
				return "lists"
			}
			return ""
		}},
	} {
		t.Run(tc.args, func(t *testing.T) {
			o, err := parseOptions(strings.Fields(tc.args), &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			if what := tc.check(o); what != "" {
				t.Errorf("wrong %s: %+v", what, *o)
			}
		})
	}
}
