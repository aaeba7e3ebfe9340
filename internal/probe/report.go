package probe

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/linger-go/linger/internal/bytesize"
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
	Counts map[TrialOutcome]int `json:"counts"`
	// Alerts counts the alerts received, by name.
	Alerts map[string]int `json:"alerts,omitempty"`
	// HTTP counts the HTTP status lines received instead of an alert.
	HTTP map[string]int `json:"http_statuses,omitempty"`
	// Resets counts the trials in which the server reset the connection;
	// ResetsAfterFIN those of them in which its FIN came first.
	Resets         int     `json:"resets"`
	ResetsAfterFIN int     `json:"resets_after_fin"`
	Verdict        Verdict `json:"verdict"`
}

// Status is the verdict in one word.
type Status string

const (
	// Delivered: every provoked alert arrived and no connection was reset.
	Delivered Status = "delivered"
	// HTTPAnswered: the server answered every provocation with an HTTP
	// response instead of an alert, and no connection was reset. Clients
	// read an HTTP error, not a TLS alert.
	HTTPAnswered Status = "http_answer"
	// ResetAfterAlert: every provoked alert arrived, but some only with a
	// reset behind it, which a client still sending runs into first.
	ResetAfterAlert Status = "reset_after_alert"
	// ResetAfterAnswer: the server answered over HTTP, but reset some
	// connections after its answer.
	ResetAfterAnswer Status = "reset_after_answer"
	// Lost: some provoked alerts never arrived.
	Lost Status = "lost"
	// Inconclusive: no trial got as far as the provocation.
	Inconclusive Status = "inconclusive"
	// AcceptedUntrusted: with -provoke client-cert, the server completed
	// the request with a 2xx status in some trial, after a client
	// certificate that no trusted CA issued: the worst a probe can find,
	// whatever else happened.
	AcceptedUntrusted Status = "accepted_untrusted"
)

// Verdict sums a probe up.
type Verdict struct {
	Status Status `json:"status"`
	// Line is one sentence for people, with advice.
	Line string `json:"line"`
}

// Exit statuses of the probe, for scripts. ExitUsage is the command's, for a
// command line it cannot run; the flag package uses the same.
const (
	ExitDelivered    = 0
	ExitNotDelivered = 1
	ExitUsage        = 2
	ExitInconclusive = 3
)

// ExitCode is the probe's exit status for scripts: ExitDelivered when
// every provocation was answered (with an alert, or over HTTP with an
// error) and no connection was reset, ExitNotDelivered when some answers
// were lost or followed by a reset, or the server accepted the untrusted
// client certificate, ExitInconclusive when nothing could be provoked.
func (r *Report) ExitCode() int {
	switch r.Verdict.Status {
	case Delivered, HTTPAnswered:
		return ExitDelivered
	case Inconclusive:
		return ExitInconclusive
	}
	return ExitNotDelivered
}

// Provoked counts the trials that got past the handshake to the
// provocation.
func (r *Report) Provoked() int { return len(r.Trials) - r.Counts[HandshakeFailed] }

func (r *Report) summarize() {
	r.Counts = make(map[TrialOutcome]int, len(Outcomes))
	for _, o := range Outcomes {
		r.Counts[o] = 0
	}
	r.Alerts, r.HTTP, r.Resets, r.ResetsAfterFIN = nil, nil, 0, 0
	for _, t := range r.Trials {
		r.Counts[t.Outcome]++
		if t.Alert != "" {
			if r.Alerts == nil {
				r.Alerts = make(map[string]int)
			}
			r.Alerts[t.Alert]++
		}
		if t.HTTPStatus != "" {
			if r.HTTP == nil {
				r.HTTP = make(map[string]int)
			}
			r.HTTP[t.HTTPStatus]++
		}
		if t.Reset {
			r.Resets++
			if t.FIN {
				r.ResetsAfterFIN++
			}
		}
	}
	r.Verdict = r.verdict()
}

const lingerAdvice = "close with a lingering close (half-close, read and discard until the client closes, " +
	"bounded), e.g. github.com/linger-go/linger"

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
	asked := 0
	for _, t := range r.Trials {
		if t.CertRequested && t.Outcome != HandshakeFailed {
			asked++
		}
	}
	if asked > 0 && r.Mode == ModeRecord {
		// A TLS 1.3 server that requires a client certificate refuses
		// the connection for the missing one, before it reads the bad
		// record (certificate_required, or an HTTP answer): delivery is
		// still measured, but of a different refusal, whatever it is.
		note += fmt.Sprintf(" (in %d trials the server asked for a client certificate, so it may have refused the "+
			"missing certificate rather than the bad record; -provoke client-cert tests its rejections of one)", asked)
	}
	var afterFIN string
	if r.ResetsAfterFIN > 0 {
		afterFIN = fmt.Sprintf("; %d of the resets came after a clean FIN, when more of the upload arrived: "+
			"the server closed its socket instead of half-closing it and reading on", r.ResetsAfterFIN)
	}
	inHandshake := 0
	for _, t := range r.Trials {
		if t.InHandshake && t.Outcome == AlertAfterError {
			inHandshake++
		}
	}
	lost := r.Counts[Reset] + r.Counts[EOF] + r.Counts[Timeout]
	answeredHTTP := r.Counts[HTTPAnswer] + r.Counts[HTTPThenReset]
	switch {
	case r.Counts[HTTPAccepted] > 0:
		var statuses []string
		for _, t := range r.Trials {
			if t.Outcome == HTTPAccepted && !slices.Contains(statuses, t.HTTPStatus) {
				statuses = append(statuses, t.HTTPStatus)
			}
		}
		return Verdict{AcceptedUntrusted, fmt.Sprintf("ACCEPTED UNTRUSTED CERTIFICATE: in %d of %d trials the "+
			"server completed the request (%s) for a client whose certificate no trusted CA issued%s. It does not "+
			"verify client certificates as it should (check its client CA and verification settings, e.g. "+
			"tls.RequireAndVerifyClientCert, nginx ssl_verify_client on, not optional_no_ca); "+
			"whether its alerts arrive is moot until it rejects them.",
			r.Counts[HTTPAccepted], provoked, strings.Join(statuses, ", "), note)}
	case lost > 0:
		var why []string
		if n := r.Counts[Reset]; n > 0 {
			why = append(why, fmt.Sprintf("%d reset: the server closed while the upload was still arriving, "+
				"so its kernel sent RST and discarded the alert; %s", n, lingerAdvice))
		}
		if n := r.Counts[EOF]; n > 0 {
			why = append(why, fmt.Sprintf("%d closed without an alert or an HTTP answer: the server's TLS stack "+
				"or application drops the connection silently", n))
		}
		if n := r.Counts[Timeout]; n > 0 {
			why = append(why, fmt.Sprintf("%d timed out: the server neither answered nor closed; "+
				"raise -timeout, or it does not notice the provocation", n))
		}
		return Verdict{Lost, fmt.Sprintf("LOST: in %d of %d trials the client never saw the alert%s. %s.",
			lost, provoked, note, strings.Join(why, "; "))}
	case inHandshake > 0 && inHandshake == r.Counts[AlertAfterError]:
		return Verdict{ResetAfterAlert, fmt.Sprintf("RESET AFTER ALERT: in %d of %d trials the server rejected the "+
			"client inside the handshake (%s) with the alert (%s) and then reset the connection, which it closed with "+
			"the client's last handshake messages unread%s. A client cannot be sending application data yet, so it "+
			"reads the alert; but the reset destroys the alert whenever the segment carrying it is lost and would "+
			"have been retransmitted. To avoid the reset, %s.",
			inHandshake, provoked, r.versions(), r.alertList(), note, lingerAdvice)}
	case r.Counts[AlertAfterError] > 0:
		return Verdict{ResetAfterAlert, fmt.Sprintf("RESET AFTER ALERT: in %d of %d trials the alert (%s) arrived "+
			"but the server also reset the connection (it closed without reading what the client was still "+
			"sending%s)%s, so a client still sending gets ECONNRESET or EPIPE and sees the alert only if it reads "+
			"after a failed write (Linux keeps it readable, Windows discards it). To deliver it, %s.",
			r.Counts[AlertAfterError], provoked, r.alertList(), afterFIN, note, lingerAdvice)}
	case r.Counts[HTTPThenReset] > 0:
		return Verdict{ResetAfterAnswer, fmt.Sprintf("RESET AFTER ANSWER: in %d of %d trials the server answered "+
			"over HTTP (%s) instead of sending a TLS alert, and then reset the connection (it closed without "+
			"reading what the client was still sending%s)%s, so a client still sending gets ECONNRESET or EPIPE "+
			"from its write and may never read the answer. To deliver it, %s.",
			r.Counts[HTTPThenReset], provoked, r.httpList(), afterFIN, note, lingerAdvice)}
	case answeredHTTP == provoked:
		return Verdict{HTTPAnswered, fmt.Sprintf("ANSWERED OVER HTTP: in all %d trials the server completed the "+
			"handshake and refused the client with an HTTP response (%s) instead of a TLS alert, and reset no "+
			"connection%s: clients read an HTTP error, not a TLS alert.", provoked, r.httpList(), note)}
	}
	if answeredHTTP > 0 {
		note += fmt.Sprintf(" (%d answered over HTTP instead: %s)", answeredHTTP, r.httpList())
	}
	return Verdict{Delivered, fmt.Sprintf("DELIVERED: all %d answers (%s) arrived before any error and no "+
		"connection was reset%s: clients still sending learn why they were refused.", provoked, r.alertList(), note)}
}

// httpList formats the HTTP status lines received, most frequent first.
func (r *Report) httpList() string { return countList(r.HTTP) }

// alertList formats the alerts received, most frequent first, as
// "bad_record_mac" or "unknown_ca 19, bad_certificate 1".
func (r *Report) alertList() string {
	if len(r.Alerts) == 0 {
		return "none"
	}
	return countList(r.Alerts)
}

// countList formats counts by name, most frequent first, leaving out the
// count when there is only one name.
func countList(m map[string]int) string {
	names := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if d := m[b] - m[a]; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	if len(names) == 1 {
		return names[0]
	}
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, m[n]))
	}
	return strings.Join(parts, ", ")
}

// FormatTrial formats one trial as a line for people.
func FormatTrial(t Trial) string {
	var parts []string
	if t.Alert != "" {
		parts = append(parts, fmt.Sprintf("%s (%d) after %.1f ms", t.Alert, t.AlertCode, t.AlertMS))
	}
	if t.HTTPStatus != "" {
		parts = append(parts, t.HTTPStatus)
	}
	if t.Reset {
		how := "reset seen by a " + t.ResetSeenBy
		if t.ResetSeenBy == "wire" {
			how = "reset seen on the socket after the watch"
		}
		if t.FIN {
			how += ", after the server's FIN"
		}
		parts = append(parts, how)
	}
	if t.Outcome != HandshakeFailed {
		s := "sent " + bytesize.Format(t.Sent)
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
		bytesize.Format(r.Upload), len(r.Trials), r.Planned)
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
	fmt.Fprintf(&b, "  %-36s %4d\n", "connections reset by the server", r.Resets)
	fmt.Fprintf(&b, "  %-36s %4d\n", "  of them after its FIN", r.ResetsAfterFIN)
	if len(r.Alerts) > 0 {
		fmt.Fprintf(&b, "alerts: %s\n", r.alertList())
	}
	if len(r.HTTP) > 0 {
		fmt.Fprintf(&b, "HTTP answers: %s\n", r.httpList())
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
