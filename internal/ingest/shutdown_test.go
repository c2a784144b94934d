package ingest_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/ingest"
	"github.com/iotransit/iotransit/internal/pki"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestIngestCloseUnderConnectionChurnDoesNotDeadlock closes the ingest
// while gateways connect and disconnect in a loop, many times over. mochi
// v2.7.9's own listener close (Clients.GetByListener) takes the clients'
// read lock twice; a disconnecting client's Clients.Delete queued for the
// write lock in between deadlocks both (mochi-mqtt issue #488). The ingest
// must never get there: every Close returns, or the watchdog fails the test
// with the goroutines. IOTRANSIT_SHUTDOWN_ROUNDS sets the rounds (default 200).
func TestIngestCloseUnderConnectionChurnDoesNotDeadlock(t *testing.T) {
	rounds := 200
	if s := os.Getenv("IOTRANSIT_SHUTDOWN_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil {
			t.Fatalf("IOTRANSIT_SHUTDOWN_ROUNDS=%q: %v", s, err)
		}
	}
	env := newCore(t, ingest.Config{}, false)
	serials := []string{gwA, gwB}
	for i := 3; i <= 4; i++ {
		serial := fmt.Sprintf("TSGW06ACM0000000%d", i)
		if _, err := env.reg.RegisterGateway(ctx(t), tenant, serial); err != nil {
			t.Fatal(err)
		}
		serials = append(serials, serial)
	}
	certs := make([]*tls.Certificate, len(serials))
	for i, serial := range serials {
		certs[i] = tu.KeyPair(t, serial, func(_ crypto.Signer, csr []byte) ([]byte, error) {
			b, _, err := env.reg.IssueCertificate(ctx(t), tenant, serial, csr, time.Hour)
			return b, err
		})
	}
	serverCA, err := pki.NewCA("server CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	base := pki.ServerTLSConfig(pki.NewCertSource(tu.ServerCert(t, serverCA, "127.0.0.1")))
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.Cert)

	var connects atomic.Int64
	for round := range rounds {
		srv, err := ingest.New(ingest.Config{Addr: "127.0.0.1:0"}, base, env.reg, env.st, prometheus.NewRegistry(), tu.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, serial := range serials {
			cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{*certs[i]}, MinVersion: tls.VersionTLS12}
			wg.Go(func() {
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					if churn(srv.Addr(), cfg, serial, n%2 == 0) {
						connects.Add(1)
					}
				}
			})
		}
		// Let the gateways churn for a moment, then close under them.
		time.Sleep(time.Duration(5+round%20) * time.Millisecond)
		closed := make(chan error, 1)
		go func() { closed <- srv.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("round %d: close: %v", round, err)
			}
		case <-time.After(30 * time.Second * tu.Slowdown()):
			close(stop)
			buf := make([]byte, 4<<20)
			t.Fatalf("round %d: the ingest did not close within 30s (deadlock); goroutines:\n%s", round, buf[:runtime.Stack(buf, true)])
		}
		close(stop)
		wg.Wait()
	}
	if connects.Load() < int64(rounds) {
		t.Fatalf("%d connections in %d rounds: the churn did not happen", connects.Load(), rounds)
	}
	t.Logf("%d rounds, %d gateway connections", rounds, connects.Load())
}

// churn connects as serial over MQTT 5 and leaves at once, politely
// (DISCONNECT) or not (the connection just closes). It reports whether the
// connection was accepted.
func churn(addr string, cfg *tls.Config, serial string, polite bool) bool {
	d := tls.Dialer{Config: cfg}
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := d.DialContext(cctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ca, err := c.Connect(cctx, &paho.Connect{ClientID: serial, KeepAlive: 30, CleanStart: true})
	if err != nil || ca.ReasonCode != 0 {
		return false
	}
	if polite {
		_ = c.Disconnect(&paho.Disconnect{})
	}
	return true
}

// TestIngestCloseSaysServerShuttingDown: at close an MQTT 5 gateway is told
// why (DISCONNECT 0x8B), as mochi's own listener close did, and an MQTT
// 3.1.1 gateway's connection closes.
func TestIngestCloseSaysServerShuttingDown(t *testing.T) {
	n := nodetest.Start(t, nil)
	reasons := make(chan byte, 1)
	if _, err := nodetest.Dial(t, n, nodetest.Gateway(t, n, tenant, gwA), gwA, func(c *gateway.UplinkConfig) {
		c.OnDisconnect = func(reason byte, err error) { reasons <- reason }
	}); err != nil {
		t.Fatal(err)
	}
	lost := make(chan error, 1)
	if _, err := dial311(t, n, nodetest.Gateway(t, n, tenant, gwB), gwB, lost); err != nil {
		t.Fatal(err)
	}
	n.Close()
	select {
	case r := <-reasons:
		if r != 0x8B {
			t.Errorf("DISCONNECT 0x%02x, want 0x8B (server shutting down)", r)
		}
	case <-time.After(5 * time.Second):
		t.Error("the MQTT 5 gateway was not disconnected")
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Error("the MQTT 3.1.1 gateway's connection is still open")
	}
}

// TestIngestCloseTwice: mochi's Server.Close closes a channel and panics
// when called again; the ingest's Close may be called any number of times.
func TestIngestCloseTwice(t *testing.T) {
	env := newCore(t, ingest.Config{}, false)
	serverCA, err := pki.NewCA("server CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	base := pki.ServerTLSConfig(pki.NewCertSource(tu.ServerCert(t, serverCA, "127.0.0.1")))
	srv, err := ingest.New(ingest.Config{Addr: "127.0.0.1:0"}, base, env.reg, env.st, prometheus.NewRegistry(), tu.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := srv.Close(); err != nil {
			t.Fatalf("close %d: %v", i+1, err)
		}
	}
}
