package lingergrpc_test

import (
	"crypto/tls"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/linger-go/linger"
	lingergrpc "github.com/linger-go/linger/grpc"
)

// A grpc-go server that requires client certificates, behind a lingering
// listener: a rejected client reads the TLS alert instead of a reset, and
// accepted connections keep the TCP_USER_TIMEOUT grpc-go would have set.
func ExampleUserTimeout() {
	cert, err := tls.LoadX509KeyPair("server.pem", "server-key.pem")
	if err != nil {
		log.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		// ClientCAs: the authorities whose clients are accepted
	})
	kp := keepalive.ServerParameters{} // grpc-go's defaults
	lc, err := linger.New(linger.Config{TCPUserTimeout: lingergrpc.UserTimeout(kp)})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", ":8443")
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.KeepaliveParams(kp))
	// Register services here.
	go srv.Serve(lc.Listener(ln))
	// At exit: srv.GracefulStop(), then lc.Shutdown(ctx).
}
