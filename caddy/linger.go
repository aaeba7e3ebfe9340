// Package lingercaddy is a Caddy listener wrapper, module ID
// caddy.listeners.linger, that makes every connection Caddy closes linger,
// so that Caddy's last word (a TLS fatal alert after a rejected client
// certificate, a final HTTP response) reaches the client instead of dying in
// the TCP reset that a close with unread incoming data causes.
//
// Build Caddy with it:
//
//	xcaddy build --with github.com/linger-go/linger/caddy
//
// and list it in the server's listener_wrappers, before tls:
//
//	{
//		servers {
//			listener_wrappers {
//				linger
//				tls
//			}
//		}
//	}
//
// The order matters. Caddy puts the TLS listener first when tls is not
// listed, and a wrapper after it sees *tls.Conn, not TCP connections: linger
// could not reach the socket, so the module logs an error and does nothing
// there.
package lingercaddy

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
	"go.uber.org/zap"

	"github.com/linger-go/linger"
)

func init() {
	caddy.RegisterModule(Wrapper{})
}

// DefaultShutdownTimeout is how long Cleanup waits for lingering connections
// when Caddy unloads a config: as long as linger's default idle timeout,
// because a client that got the last word closes within a round trip.
const DefaultShutdownTimeout = linger.DefaultIdleTimeout

// Wrapper is the caddy.listeners.linger module. Its fields are linger.Config's
// bounds; zero means linger's default.
type Wrapper struct {
	// IdleTimeout ends a lingering connection whose peer neither sent nor
	// acknowledged anything for this long (default 2s).
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`
	// MaxHold caps the total time a connection lingers (default 30s).
	MaxHold caddy.Duration `json:"max_hold,omitempty"`
	// MaxDiscard caps the bytes read and discarded per connection
	// (default 8 MiB).
	MaxDiscard int64 `json:"max_discard,omitempty"`
	// MaxConns caps the connections lingering at once (default 4096).
	MaxConns int `json:"max_conns,omitempty"`
	// MaxConnsPerIP caps the connections lingering at once per client IP
	// address, or per IPv6 /64 (default 256; -1: no cap).
	MaxConnsPerIP int `json:"max_conns_per_ip,omitempty"`
	// ShutdownTimeout bounds how long unloading the config waits for
	// connections still lingering before it closes them (default 2s).
	ShutdownTimeout caddy.Duration `json:"shutdown_timeout,omitempty"`

	closer *linger.Closer
	logger *zap.Logger
}

// CaddyModule returns the module's information.
func (Wrapper) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.linger",
		New: func() caddy.Module { return new(Wrapper) },
	}
}

// Provision checks the bounds and starts the module's linger.Closer.
func (w *Wrapper) Provision(ctx caddy.Context) error {
	w.logger = ctx.Logger()
	if w.ShutdownTimeout < 0 {
		return fmt.Errorf("linger: shutdown_timeout %v is negative", time.Duration(w.ShutdownTimeout))
	}
	cfg := linger.Config{
		IdleTimeout:   time.Duration(w.IdleTimeout),
		MaxHold:       time.Duration(w.MaxHold),
		MaxDiscard:    w.MaxDiscard,
		MaxConns:      w.MaxConns,
		MaxConnsPerIP: w.MaxConnsPerIP,
	}
	if w.logger.Core().Enabled(zap.DebugLevel) {
		logger := w.logger
		cfg.OnClose = func(r linger.Report) {
			logger.Debug("connection closed",
				zap.Stringer("remote", r.RemoteAddr),
				zap.Stringer("outcome", r.Outcome),
				zap.Duration("held", r.Held),
				zap.Int64("discarded", r.Discarded),
				zap.Int64("unacked", r.Unacked),
				zap.Bool("undelivered", r.Undelivered()),
				zap.Error(r.Err))
		}
	}
	c, err := linger.New(cfg)
	if err != nil {
		return err
	}
	w.closer = c
	return nil
}

// Cleanup shuts the Closer down when Caddy unloads the config: later closes
// are plain, and connections still lingering get ShutdownTimeout to finish.
func (w *Wrapper) Cleanup() error {
	if w.closer == nil {
		return nil
	}
	d := time.Duration(w.ShutdownTimeout)
	if d == 0 {
		d = DefaultShutdownTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := w.closer.Shutdown(ctx)
	w.logger.Debug("shut down", zap.Error(err))
	return err
}

// Closer returns the module's linger.Closer, for its Stats; nil before
// Provision.
func (w *Wrapper) Closer() *linger.Closer { return w.closer }

// tlsListener is the type crypto/tls.NewListener returns; Caddy wraps its
// listener in one at the tls position of listener_wrappers.
var tlsListener = reflect.TypeOf(newTLSListener())

// WrapListener returns ln with lingering connections. Placed after tls in
// listener_wrappers, where it would only see TLS connections, it logs an
// error and returns ln unchanged.
func (w *Wrapper) WrapListener(ln net.Listener) net.Listener {
	if reflect.TypeOf(ln) == tlsListener {
		w.logger.Error("linger is listed after tls in listener_wrappers: it sees TLS connections and cannot reach their sockets, so it does nothing; list it before tls",
			zap.String("address", ln.Addr().String()))
		return ln
	}
	return &listener{Listener: w.closer.Listener(ln), logger: w.logger}
}

// listener warns once if what it accepts is not a connection linger can
// hold, such as the connections of a wrapper listed before it that hides the
// TCP connection.
type listener struct {
	net.Listener
	logger *zap.Logger
	once   sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		if _, ok := conn.(*linger.Conn); !ok {
			l.once.Do(func() {
				l.logger.Warn("linger accepted a connection that is not TCP; such connections close plainly",
					zap.String("type", fmt.Sprintf("%T", conn)))
			})
		}
	}
	return conn, err
}

// UnmarshalCaddyfile sets up the wrapper from Caddyfile tokens. Syntax:
//
//	linger {
//		idle_timeout     <duration>
//		max_hold         <duration>
//		max_discard      <size>
//		max_conns        <n>
//		max_conns_per_ip <n>        (-1: no per-address cap)
//		shutdown_timeout <duration>
//	}
//
// Every subdirective is optional; sizes take units (8MiB, 512KB).
func (w *Wrapper) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		name := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		val := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch name {
		case "idle_timeout", "max_hold", "shutdown_timeout":
			dur, err := caddy.ParseDuration(val)
			if err != nil {
				return d.Errf("linger %s: %v", name, err)
			}
			if dur < 0 {
				return d.Errf("linger %s: %s is negative", name, val)
			}
			switch name {
			case "idle_timeout":
				w.IdleTimeout = caddy.Duration(dur)
			case "max_hold":
				w.MaxHold = caddy.Duration(dur)
			default:
				w.ShutdownTimeout = caddy.Duration(dur)
			}
		case "max_discard":
			n, err := humanize.ParseBytes(val)
			if err != nil || n > 1<<62 {
				return d.Errf("linger max_discard: %q is not a size", val)
			}
			w.MaxDiscard = int64(n)
		case "max_conns", "max_conns_per_ip":
			n, err := strconv.Atoi(val)
			// max_conns_per_ip -1 turns the per-address cap off, as in
			// linger.Config; no other negative count means anything.
			if err != nil || n < 0 && !(name == "max_conns_per_ip" && n == -1) {
				return d.Errf("linger %s: %q is not a count", name, val)
			}
			if name == "max_conns" {
				w.MaxConns = n
			} else {
				w.MaxConnsPerIP = n
			}
		default:
			return d.Errf("linger: unknown subdirective %q", name)
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner     = (*Wrapper)(nil)
	_ caddy.CleanerUpper    = (*Wrapper)(nil)
	_ caddy.ListenerWrapper = (*Wrapper)(nil)
	_ caddyfile.Unmarshaler = (*Wrapper)(nil)
)
