package linger

import "net"

// Listener returns a listener whose accepted TCP connections linger, through
// c, when closed. It works under http.Server.ServeTLS, tls.NewListener, gRPC
// and any other server that closes its connections; connections that are not
// TCP pass through unchanged.
func (c *Closer) Listener(ln net.Listener) net.Listener {
	return &listener{Listener: ln, c: c}
}

type listener struct {
	net.Listener
	c *Closer
}

func (l *listener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if tcp, ok := conn.(*net.TCPConn); ok {
		setUserTimeout(tcp, l.c.cfg.TCPUserTimeout)
		return &Conn{TCPConn: tcp, c: l.c}, nil
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

// Close hands the connection to its Closer; see Closer.Close.
func (c *Conn) Close() error { return c.c.Close(c.TCPConn) }
