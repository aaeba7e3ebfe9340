package probe

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Report is the result of a probe: every trial, the counts, and a verdict.
// It marshals to JSON as it is.
type Report struct {
	Target  string `json:"target"`
	Mode    Mode   `json:"provoke"`
	Upload  int64  `json:"upload"`
	Planned int    `json:"trials_planned"`
	// Stopped says why the probe ended before Planned trials, if it did
	// for a reason of its own.
	Stopped string  `json:"stopped,omitempty"`
	Trials  []Trial `json:"trials"`
	// Counts has an entry for every outcome, zero included.
	Counts map[Outcome]int `json:"counts"`
	// Alerts counts the alerts received, by name.
	Alerts  map[string]int `json:"alerts,omitempty"`
	Verdict Verdict        `json:"verdict"`
}

// Status is the verdict in one word.
type Status string

const (
	// Delivered: every provoked alert arrived and no connection was reset.
	Delivered Status = "delivered"
	// ResetAfterAlert: every provoked alert arrived, but some only with a
	// reset behind it, which a client still sending runs into first.
	ResetAfterAlert Status = "reset_after_alert"
	// Lost: some provoked alerts never arrived.
	Lost Status = "lost"
	// Inconclusive: no trial got as far as the provocation.
	Inconclusive Status = "inconclusive"
)

// Verdict sums a probe up.
type Verdict struct {
	Status Status `json:"status"`
	// Line is one sentence for people, with advice.
	Line string `json:"line"`
}

// ExitCode is the probe's exit status for scripts: 0 when every provoked
// alert was delivered, 1 when some were not, 2 when nothing could be
// provoked.
func (r *Report) ExitCode() int {
	switch r.Verdict.Status {
	case Delivered:
		return 0
	case Inconclusive:
		return 2
	}
	return 1
}

// Provoked counts the trials that got past the handshake to the
// provocation.
func (r *Report) Provoked() int { return len(r.Trials) - r.Counts[HandshakeFailed] }

func (r *Report) summarize() {
	r.Counts = make(map[Outcome]int, len(Outcomes))
	for _, o := range Outcomes {
		r.Counts[o] = 0
	}
	r.Alerts = nil
	for _, t := range r.Trials {
		r.Counts[t.Outcome]++
		if t.Alert != "" {
			if r.Alerts == nil {
				r.Alerts = make(map[string]int)
			}
			r.Alerts[t.Alert]++
		}
	}
	r.Verdict = r.verdict()
}

func (r *Report) verdict() Verdict {
	provoked := r.Provoked()
	if provoked == 0 {
		why := "no trials ran"
		for _, t := range r.Trials {
			if t.Error != "" {
				why = t.Error
				break
			}
		}
		return Verdict{Inconclusive, fmt.Sprintf("INCONCLUSIVE: no trial got as far as provoking an alert (%s); "+
			"fix the configuration and run again.", why)}
	}
	var note string
	if hf := r.Counts[HandshakeFailed]; hf > 0 {
		note = fmt.Sprintf(" (%d trials failed at the handshake and are not counted)", hf)
	}
	if n := r.Alerts["certificate_required"]; n > 0 && r.Mode == ModeRecord {
		// A TLS 1.3 server that requires a client certificate refuses
		// the connection before it reads the bad record: delivery is
		// still measured, but of a different alert.
		note += fmt.Sprintf(" (%d answered certificate_required, not bad_record_mac: the server requires a "+
			"client certificate, and --provoke client-cert tests its rejections)", n)
	}
	alerts := r.alertList()
	lost := r.Counts[Reset] + r.Counts[EOF] + r.Counts[Timeout]
	switch {
	case lost > 0:
		var why []string
		if n := r.Counts[Reset]; n > 0 {
			why = append(why, fmt.Sprintf("%d reset: the server closed while the upload was still arriving, "+
				"so its kernel sent RST and discarded the alert; close with a lingering close "+
				"(half-close, read and discard until the client closes, bounded), e.g. github.com/linger-go/linger", n))
		}
		if n := r.Counts[EOF]; n > 0 {
			why = append(why, fmt.Sprintf("%d closed without an alert: the server's TLS stack or application "+
				"drops the connection silently", n))
		}
		if n := r.Counts[Timeout]; n > 0 {
			why = append(why, fmt.Sprintf("%d timed out: the server neither answered nor closed; "+
				"raise --timeout, or it does not notice the provocation", n))
		}
		return Verdict{Lost, fmt.Sprintf("LOST: in %d of %d trials the client never saw the alert%s. %s.",
			lost, provoked, note, strings.Join(why, "; "))}
	case r.Counts[AlertAfterError] > 0:
		return Verdict{ResetAfterAlert, fmt.Sprintf("RESET AFTER ALERT: in %d of %d trials the alert (%s) arrived "+
			"but the server then reset the connection (it closed without reading what the client was still "+
			"sending)%s, so a client still sending gets ECONNRESET or EPIPE and sees the alert only if it reads after a failed write "+
			"(Linux keeps it readable, Windows discards it). Close with a lingering close (half-close, read "+
			"and discard until the client closes, bounded), e.g. github.com/linger-go/linger.",
			r.Counts[AlertAfterError], provoked, alerts, note)}
	}
	return Verdict{Delivered, fmt.Sprintf("DELIVERED: all %d alerts (%s) arrived before any error and no "+
		"connection was reset%s: clients still sending learn why they were refused.", provoked, alerts, note)}
}

// alertList formats the alerts received, most frequent first, as
// "bad_record_mac" or "unknown_ca 19, bad_certificate 1".
func (r *Report) alertList() string {
	names := slices.SortedFunc(maps.Keys(r.Alerts), func(a, b string) int {
		if d := r.Alerts[b] - r.Alerts[a]; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	if len(names) == 1 {
		return names[0]
	}
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, r.Alerts[n]))
	}
	return strings.Join(parts, ", ")
}

// FormatTrial formats one trial as a line for people.
func FormatTrial(t Trial) string {
	var parts []string
	if t.Alert != "" {
		parts = append(parts, fmt.Sprintf("%s (%d) after %.1f ms", t.Alert, t.AlertCode, t.AlertMS))
	}
	if t.Outcome != HandshakeFailed {
		s := "sent " + formatBytes(t.Sent)
		if t.Version != "" {
			s += ", " + t.Version
		}
		parts = append(parts, s)
	}
	if t.Error != "" {
		parts = append(parts, t.Error)
	}
	return fmt.Sprintf("trial %3d  %-17s  %s", t.N, t.Outcome, strings.Join(parts, "; "))
}

// WriteSummary writes the counts and the verdict for people.
func (r *Report) WriteSummary(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\nlinger probe %s: provoke %s, upload %s, %d of %d trials", r.Target, r.Mode,
		formatBytes(r.Upload), len(r.Trials), r.Planned)
	if v := r.versions(); v != "" {
		fmt.Fprintf(&b, ", %s", v)
	}
	b.WriteString("\n")
	if r.Stopped != "" {
		fmt.Fprintf(&b, "  (%s)\n", r.Stopped)
	}
	for _, o := range Outcomes {
		fmt.Fprintf(&b, "  %-36s %4d\n", o.Describe(), r.Counts[o])
	}
	if len(r.Alerts) > 0 {
		fmt.Fprintf(&b, "alerts: %s\n", r.alertList())
	}
	fmt.Fprintf(&b, "verdict: %s\n", r.Verdict.Line)
	_, err := io.WriteString(w, b.String())
	return err
}

// versions lists the TLS versions the trials negotiated.
func (r *Report) versions() string {
	var vs []string
	for _, t := range r.Trials {
		if t.Version != "" && !slices.Contains(vs, t.Version) {
			vs = append(vs, t.Version)
		}
	}
	return strings.Join(vs, " and ")
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
