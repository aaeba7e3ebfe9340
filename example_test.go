package linger_test

import (
	"bufio"
	"context"
	"expvar"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/linger-go/linger"
)

// The two-line adoption in an HTTPS server: every connection the server
// closes, including those it drops after a failed handshake, lingers until
// the client has the TLS alert or the final response.
func ExampleCloser_Listener() {
	lc, err := linger.New(linger.Config{}) // the zero Config has sensible bounds
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", ":8443")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.ServeTLS(lc.Listener(ln), "cert.pem", "key.pem")

	// At exit, stop the server first, then give lingering connections a
	// moment to finish.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	lc.Shutdown(ctx)
}

// A plain TCP server that rejects a client with an error line while the
// client is still sending. A plain close would reset the connection and the
// client might never see the line.
func ExampleCloser_Close() {
	lc, err := linger.New(linger.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer lc.Shutdown(context.Background())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		// Refuse without reading the request.
		fmt.Fprintf(conn, "ERR too large\n")
		lc.Close(conn)
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	conn.Write(make([]byte, 64<<10)) // the upload the server never reads
	line, err := bufio.NewReader(conn).ReadString('\n')
	fmt.Printf("%q %v\n", line, err)
	// Output: "ERR too large\n" <nil>
}

// Reports and counters show what lingering did for each connection.
func ExampleConfig_OnClose() {
	done := make(chan linger.Report, 1)
	lc, err := linger.New(linger.Config{
		IdleTimeout: time.Second,
		OnClose:     func(r linger.Report) { done <- r },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer lc.Shutdown(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	ln = lc.Listener(ln)

	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	client.Write([]byte("unread request"))
	server.Write([]byte("bye"))
	server.Close() // lingers
	io.ReadAll(client)
	client.Close()

	// r.Unacked would say whether the peer acknowledged all we wrote: 0
	// here on Linux's event loop, -1 (unknown) on the portable backend.
	// r.Undelivered() is the failure to count: false here on both.
	r := <-done
	fmt.Println(r.Outcome, r.Discarded, r.Undelivered())
	fmt.Println(lc.Stats().Outcomes[linger.PeerClosed])
	// Output:
	// peer_closed 14 false
	// 1
}

// Stats marshals to JSON as is, so expvar can publish it on /debug/vars.
func ExampleCloser_Stats() {
	lc, err := linger.New(linger.Config{})
	if err != nil {
		log.Fatal(err)
	}
	expvar.Publish("linger", expvar.Func(func() any { return lc.Stats() }))
	fmt.Println(expvar.Get("linger").String()[:15])
	// Output: {"lingering":0,
}

// Every close logged with log/slog: a Report is a slog.LogValuer, so it
// logs as a group of its fields.
func ExampleReport_LogValue() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		// Leave out what changes from run to run or from one system to
		// another, so that the output below is stable.
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey, "remote", "held", "unacked":
				return slog.Attr{}
			}
			return a
		},
	}))
	done := make(chan struct{})
	lc, err := linger.New(linger.Config{OnClose: func(r linger.Report) {
		logger.Info("linger", "conn", r)
		close(done)
	}})
	if err != nil {
		log.Fatal(err)
	}
	defer lc.Shutdown(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	ln = lc.Listener(ln)

	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	client.Write([]byte("unread request"))
	server.Write([]byte("bye"))
	server.Close() // lingers until the client closes
	io.ReadAll(client)
	client.Close()
	<-done
	// Output: level=INFO msg=linger conn.outcome=peer_closed conn.discarded=14
}
