// Package lab is `linger lab`: it reproduces, on one machine, the lost TLS
// alert and final response that a plain close causes, and shows the fix.
//
// A run is a matrix of cells: a network (loopback, or two network namespaces
// joined by a path with delay and loss), a scenario (what server and client
// do), a client (Go crypto/tls; Go net/http stock and with package alert,
// each over HTTP/1.1 and offering HTTP/2; curl; openssl s_client) and a
// server close strategy (an immediate close,
// SO_LINGER 0, CloseWrite and a 500 ms sleep as net/http does, and the
// linger engine). Each cell runs many trials and counts how often the client
// application reported the server's last word first, how often that word at
// least reached the client, the RSTs the server's namespace sent, and how
// long the server held its sockets.
//
// The lab implements the three other servers' strategies itself, on the
// same server code, so that only the close differs between columns. The
// report is a Markdown table, JSON (schema in docs/lab-json.md) and a
// self-contained HTML page with SVG charts.
package lab
