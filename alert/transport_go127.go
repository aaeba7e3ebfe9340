//go:build go1.27

package alert

// stockH2 is true from Go 1.27, whose net/http speaks HTTP/2 over any
// connection with a ConnectionState method, a *Conn included: the
// Transport then runs on net/http's transport alone, whose HTTP/2 is
// faster than x/net's and costs no extra allocation per request.
const stockH2 = true
