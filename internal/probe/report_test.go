package probe

import (
	"strings"
	"testing"
)

func TestVerdict(t *testing.T) {
	alert := func(o TrialOutcome, reset, fin bool) Trial {
		return Trial{Outcome: o, Alert: "unknown_ca", AlertCode: 48, Reset: reset, FIN: fin, Version: "TLS 1.3"}
	}
	http := func(o TrialOutcome, reset bool) Trial {
		return Trial{Outcome: o, HTTPStatus: "HTTP/1.1 400 Bad Request", Reset: reset, FIN: true, Version: "TLS 1.3"}
	}
	tls12 := alert(AlertAfterError, true, false)
	tls12.InHandshake, tls12.Version = true, "TLS 1.2"
	for _, tc := range []struct {
		name   string
		mode   Mode
		trials []Trial
		status Status
		exit   int
		says   []string
	}{
		{"delivered", ModeClientCert, []Trial{alert(AlertFirst, false, true), alert(AlertFirst, false, true)},
			Delivered, ExitDelivered, []string{"DELIVERED", "all 2"}},
		{"a reset after the FIN is not delivered", ModeRecord,
			[]Trial{alert(AlertFirst, false, true), alert(AlertAfterError, true, true)},
			ResetAfterAlert, ExitNotDelivered, []string{"RESET AFTER ALERT", "1 of 2", "1 of the resets came after a clean FIN"}},
		{"TLS 1.2: rejected inside the handshake", ModeClientCert, []Trial{tls12, tls12},
			ResetAfterAlert, ExitNotDelivered, []string{"inside the handshake (TLS 1.2)", "cannot be sending"}},
		{"nginx: HTTP answers", ModeClientCert, []Trial{http(HTTPAnswer, false), http(HTTPAnswer, false)},
			HTTPAnswered, ExitDelivered, []string{"ANSWERED OVER HTTP", "HTTP/1.1 400 Bad Request", "not a TLS alert"}},
		{"an untrusted certificate accepted", ModeClientCert,
			[]Trial{alert(AlertFirst, false, true), {Outcome: HTTPAccepted, HTTPStatus: "HTTP/1.1 200 OK", FIN: true, Version: "TLS 1.3"}},
			AcceptedUntrusted, ExitNotDelivered, []string{"ACCEPTED UNTRUSTED CERTIFICATE", "1 of 2", "HTTP/1.1 200 OK"}},
		{"HTTP answers, then resets", ModeClientCert, []Trial{http(HTTPAnswer, false), http(HTTPThenReset, true)},
			ResetAfterAnswer, ExitNotDelivered, []string{"RESET AFTER ANSWER", "1 of 2"}},
		{"lost", ModeRecord, []Trial{alert(AlertFirst, false, true), {Outcome: Reset, Reset: true}},
			Lost, ExitNotDelivered, []string{"LOST", "1 of 2", "1 reset"}},
		{"EOF is lost", ModeRecord, []Trial{{Outcome: EOF, FIN: true}}, Lost, ExitNotDelivered,
			[]string{"without an alert or an HTTP answer"}},
		{"inconclusive", ModeRecord, []Trial{{Outcome: HandshakeFailed, Error: "connection refused"}},
			Inconclusive, ExitInconclusive, []string{"INCONCLUSIVE", "connection refused"}},
		{"record mode met certificate_required", ModeRecord,
			[]Trial{{Outcome: AlertFirst, Alert: "certificate_required", AlertCode: 116, CertRequested: true}},
			Delivered, ExitDelivered, []string{" -provoke client-cert"}},
		{"record mode, a certificate asked for, another alert", ModeRecord,
			[]Trial{{Outcome: AlertAfterError, Alert: "bad_certificate", AlertCode: 42, Reset: true, CertRequested: true}},
			ResetAfterAlert, ExitNotDelivered, []string{"asked for a client certificate", " -provoke client-cert"}},
		{"record mode, a certificate asked for, an HTTP answer", ModeRecord,
			[]Trial{{Outcome: HTTPAnswer, HTTPStatus: "HTTP/1.1 400 Bad Request", CertRequested: true}},
			HTTPAnswered, ExitDelivered, []string{" -provoke client-cert"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Report{Mode: tc.mode, Trials: tc.trials}
			r.summarize()
			if r.Verdict.Status != tc.status || r.ExitCode() != tc.exit {
				t.Errorf("status %s, exit %d; want %s, %d\n%s", r.Verdict.Status, r.ExitCode(), tc.status, tc.exit, r.Verdict.Line)
			}
			for _, s := range tc.says {
				if !strings.Contains(r.Verdict.Line, s) {
					t.Errorf("verdict does not say %q:\n%s", s, r.Verdict.Line)
				}
			}
		})
	}
}
