package linger

import "log/slog"

// LogValue makes a Report log as a group of its fields under log/slog:
// outcome, remote, held, discarded, and unacked and err when they say
// something (unacked is left out where it cannot be known), and
// undelivered=true when the peer may not have got our last word.
func (r Report) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs, slog.String("outcome", r.Outcome.String()))
	if r.RemoteAddr != nil {
		attrs = append(attrs, slog.String("remote", r.RemoteAddr.String()))
	}
	attrs = append(attrs,
		slog.Duration("held", r.Held),
		slog.Int64("discarded", r.Discarded))
	if r.Unacked >= 0 {
		attrs = append(attrs, slog.Int64("unacked", r.Unacked))
	}
	if r.Undelivered() {
		attrs = append(attrs, slog.Bool("undelivered", true))
	}
	if r.Err != nil {
		attrs = append(attrs, slog.String("err", r.Err.Error()))
	}
	return slog.GroupValue(attrs...)
}
