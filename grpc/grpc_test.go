package lingergrpc_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/linger-go/linger"
	lingergrpc "github.com/linger-go/linger/grpc"
	"github.com/linger-go/linger/internal/pki"
	"github.com/linger-go/linger/internal/proc"
	"github.com/linger-go/linger/internal/testbed"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer runs a grpc-go server with TLS 1.3 credentials that require a
// client certificate from ca, serving the health service on a loopback
// listener wrapped by lc (nil: not wrapped), until the test ends. It returns
// the address and a channel of the connections the server accepted.
func startServer(t *testing.T, ca *pki.PKI, lc *linger.Closer, kp keepalive.ServerParameters) (string, <-chan net.Conn) {
	t.Helper()
	var ln net.Listener
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if lc != nil {
		ln = testbed.Linger(t, lc, ln)
	}
	rec := recorder{ln, make(chan net.Conn, 1000)}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ca.ServerConfig(tls.VersionTLS13))), grpc.KeepaliveParams(kp))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(rec)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return addr, rec.accepted
}

// recorder keeps what its listener accepts.
type recorder struct {
	net.Listener
	accepted chan net.Conn
}

func (r recorder) Accept() (net.Conn, error) {
	c, err := r.Listener.Accept()
	if err == nil {
		select {
		case r.accepted <- c:
		default:
		}
	}
	return c, err
}

// check makes one health check with a client presenting cert (nil: the
// trusted client certificate) and returns its error. If the check succeeds,
// then runs before the client closes its connection.
func check(t *testing.T, ca *pki.PKI, addr string, cert *tls.Certificate, then func()) error {
	t.Helper()
	if cert == nil {
		cert = &ca.Client
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientConfig(cert, tls.VersionTLS13))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil && then != nil {
		then()
	}
	return err
}

// userTimeoutMS reads TCP_USER_TIMEOUT from the socket under an accepted
// connection.
func userTimeoutMS(t *testing.T, conn net.Conn) int {
	t.Helper()
	var tcp *net.TCPConn
	switch c := conn.(type) {
	case *net.TCPConn:
		tcp = c
	case *linger.Conn:
		tcp = c.TCPConn
	default:
		t.Fatalf("the server accepted a %T", conn)
	}
	return testbed.TCPUserTimeout(t, tcp)
}

// TestUserTimeout: grpc-go sets TCP_USER_TIMEOUT from its keepalive
// parameters on a plain listener's connections but not on a
// linger.Listener's; linger.Config.TCPUserTimeout set from UserTimeout puts
// back exactly what grpc-go would have set.
func TestUserTimeout(t *testing.T) {
	countFDs(t)
	ca := testbed.SharedPKI(t)
	for _, tc := range []struct {
		name string
		kp   keepalive.ServerParameters
	}{
		{"default keepalive", keepalive.ServerParameters{}},
		{"timeout 7s", keepalive.ServerParameters{Timeout: 7 * time.Second}},
		{"keepalive off", keepalive.ServerParameters{Time: time.Duration(1<<63 - 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			measure := func(lc *linger.Closer) int {
				addr, accepted := startServer(t, ca, lc, tc.kp)
				ms := -1
				if err := check(t, ca, addr, nil, func() { ms = userTimeoutMS(t, <-accepted) }); err != nil {
					t.Fatalf("health check: %v", err)
				}
				return ms
			}
			plain := measure(nil)
			without := measure(linger.Must(linger.Config{}))
			with := measure(linger.Must(linger.Config{TCPUserTimeout: lingergrpc.UserTimeout(tc.kp)}))
			t.Logf("TCP_USER_TIMEOUT: plain listener %d ms, linger.Listener %d ms, with TCPUserTimeout %d ms", plain, without, with)
			if want := int(lingergrpc.UserTimeout(tc.kp) / time.Millisecond); plain != want {
				t.Errorf("grpc-go set %d ms on a *net.TCPConn, UserTimeout says %d ms", plain, want)
			}
			if without != 0 {
				t.Errorf("grpc-go set %d ms on a *linger.Conn; the loss this package documents is gone", without)
			}
			if with != plain {
				t.Errorf("with Config.TCPUserTimeout: %d ms, want %d as on a plain listener", with, plain)
			}
		})
	}
}

// TestRejectedClientSeesAlert counts, over trials, how often a grpc-go
// client whose certificate the server rejects reports the server's TLS
// alert, against a plain and a lingering listener.
func TestRejectedClientSeesAlert(t *testing.T) {
	countFDs(t)
	const trials = 20
	ca := testbed.SharedPKI(t)
	untrusted, err := pki.SelfSigned("untrusted")
	if err != nil {
		t.Fatal(err)
	}
	count := func(lc *linger.Closer) (alerts int, other []string) {
		addr, _ := startServer(t, ca, lc, keepalive.ServerParameters{})
		for range trials {
			err := check(t, ca, addr, &untrusted, nil)
			switch {
			case err == nil:
				t.Fatal("the server accepted an untrusted certificate")
			case strings.Contains(err.Error(), "remote error: tls:"):
				alerts++
			default:
				other = append(other, err.Error())
			}
		}
		return alerts, other
	}
	plain, plainOther := count(nil)
	lingering, lingerOther := count(linger.Must(linger.Config{}))
	t.Logf("client reported the alert: plain listener %d/%d, linger.Listener %d/%d", plain, trials, lingering, trials)
	for _, e := range plainOther[:min(len(plainOther), 2)] {
		t.Logf("plain listener, no alert: %s", e)
	}
	for _, e := range lingerOther {
		t.Errorf("linger.Listener, no alert: %s", e)
	}
}

// countFDs checks, when the test ends, that every descriptor it opened is
// closed. Call it first: cleanups run last registered first.
func countFDs(t *testing.T) {
	before := proc.OpenFDs()
	t.Cleanup(func() { testbed.WaitFDs(t, before) })
}
