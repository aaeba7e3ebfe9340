package linger

import "net"

// Listener returns a listener whose accepted TCP connections linger, through
// c, when closed. It works under http.Server.ServeTLS, tls.NewListener, gRPC
// and any other server that closes its connections; connections that are not
// TCP pass through unchanged, and so do the inner listener's errors.
func (c *Closer) Listener(ln net.Listener) net.Listener {
	c.ready()
	return &listener{Listener: ln, c: c}
}

type listener struct {
	net.Listener
	c *Closer
}

// Accept wraps what the inner listener accepted. An error is always passed
// on; a connection that comes with it is wrapped too (so that closing it
// lingers), and a nil *net.TCPConn is never wrapped, since a Conn with no
// connection inside would panic in its first use.
func (l *listener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if tcp, ok := conn.(*net.TCPConn); ok {
		if tcp == nil {
			if err != nil {
				return nil, err
			}
			return conn, nil // the inner listener's own odd answer
		}
		setUserTimeout(tcp, l.c.cfg.TCPUserTimeout)
		return &Conn{TCPConn: tcp, c: l.c}, err
	}
	return conn, err
}

// Conn is a TCP connection accepted through Closer.Listener. It is a
// *net.TCPConn in every way (CloseWrite, ReadFrom and so sendfile,
// SyscallConn, keep-alive setters) except that Close lingers. Code that
// type-asserts an accepted connection to *net.TCPConn should assert an
// interface with the methods it needs instead, or use Conn.TCPConn (whose
// own Close does not linger).
type Conn struct {
	*net.TCPConn
	c *Closer
}

// Close hands the connection to its Closer; see Closer.Close. A Conn not
// made by a Listener has no Closer and closes plainly.
func (c *Conn) Close() error {
	switch {
	case c == nil || c.TCPConn == nil:
		return ErrNilConn
	case c.c == nil:
		return c.TCPConn.Close()
	}
	return c.c.Close(c.TCPConn)
}
