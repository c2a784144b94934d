package ingest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	tu "github.com/iotransit/iotransit/internal/testutil"
)

// gateEnv is a gateway listener with a handshake gate, whose
// authentication takes a while (as a chain check does) and counts how many
// run at once.
type gateEnv struct {
	l           *tlsListener
	reg         *prometheus.Registry
	addr        string
	established chan Identity
	refusals    chan Event
	authNow     atomic.Int64 // authentications running
	authPeak    atomic.Int64

	mu   sync.Mutex
	open []net.Conn
}

func newGateEnv(t *testing.T, parallel int, perSecond float64, timeout, authTakes time.Duration) *gateEnv {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &gateEnv{addr: inner.Addr().String(), established: make(chan Identity, 1024), refusals: make(chan Event, 1024), reg: prometheus.NewRegistry()}
	auth := func(cs tls.ConnectionState) (Identity, error) {
		n := e.authNow.Add(1)
		defer e.authNow.Add(-1)
		for p := e.authPeak.Load(); n > p && !e.authPeak.CompareAndSwap(p, n); p = e.authPeak.Load() {
		}
		time.Sleep(authTakes)
		return Identity{Tenant: "acme", Serial: cs.PeerCertificates[0].Subject.CommonName}, nil
	}
	e.l = testListener(t, inner, auth, func(ev Event) { e.refusals <- ev })
	e.l.timeout, e.l.m = timeout, newMetrics(e.reg)
	e.l.pending, e.l.perAddrMax = make(chan struct{}, 512), 512
	e.l.gate = newHandshakeGate(parallel, perSecond, e.l.stopped(), e.reg)
	served := make(chan struct{})
	go func() {
		defer close(served)
		e.l.Serve(func(_ string, c net.Conn) error {
			e.mu.Lock()
			e.open = append(e.open, c) // open until the listener closes (unreachable, the collector would close it)
			e.mu.Unlock()
			e.established <- c.(*gatewayConn).id
			return nil
		})
	}()
	t.Cleanup(func() { e.l.Close(nil); <-served })
	return e
}

// dial makes a TLS handshake as cn and waits for the server's verdict: nil
// when the connection is still open a moment after its handshake.
func (e *gateEnv) dial(cert *tls.Certificate) error {
	cfg := &tls.Config{Certificates: []tls.Certificate{*cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", e.addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	// TLS 1.3: the server's verdict on the client's certificate comes
	// after the client's side of the handshake; an open connection does
	// not answer, a refused one ends.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeoutErr(err) {
		return fmt.Errorf("connection ended after the handshake: %v", err)
	}
	return nil
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A storm of handshakes goes through the gate: never more than its slots
// compute at once (observed in the authentication, which runs inside the
// handshake), and every connection that waited gets through.
func TestIngestGateBoundsConcurrentHandshakes(t *testing.T) {
	tests := []struct {
		name     string
		parallel int
	}{
		{name: "one slot", parallel: 1},
		{name: "two slots", parallel: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newGateEnv(t, tc.parallel, 0, 20*time.Second, 10*time.Millisecond)
			const storm = 40
			certs := make([]*tls.Certificate, storm)
			for i := range certs {
				certs[i] = tu.SelfSigned(t, fmt.Sprintf("TSGW06ACM%08d", i))
			}
			errs := make([]error, storm)
			var wg sync.WaitGroup
			for i := range storm {
				wg.Go(func() { errs[i] = e.dial(certs[i]) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("a connection that waited at the gate did not get through: %v", err)
			}
			seen := map[string]bool{}
			for range storm {
				select {
				case id := <-e.established:
					seen[id.Serial] = true
				case ev := <-e.refusals:
					t.Fatalf("refused: %+v", ev)
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of %d established", len(seen), storm)
				}
			}
			if len(seen) != storm {
				t.Errorf("%d distinct gateways established, want %d", len(seen), storm)
			}
			if peak := e.authPeak.Load(); peak > int64(tc.parallel) {
				t.Errorf("%d handshakes authenticated at once, want at most %d", peak, tc.parallel)
			}
			if peak := e.l.gate.peak.Load(); peak > int64(tc.parallel) || peak < 1 {
				t.Errorf("gate peak %d, want 1 to %d", peak, tc.parallel)
			}
			if got := tu.Counter(t, e.reg, "iotransit_ingest_handshakes_total", map[string]string{"result": "ok"}); got != storm {
				t.Errorf("iotransit_ingest_handshakes_total{result=ok} = %v, want %d", got, storm)
			}
		})
	}
}

// A peer that opens a connection and sends nothing holds no slot: with a
// single slot, a gateway still completes its handshake at once.
func TestIngestGateSlowPeerHoldsNoSlot(t *testing.T) {
	e := newGateEnv(t, 1, 0, 20*time.Second, 0)
	var silent []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	tu.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := e.l.gate.waiting.Load(); n != 0 {
			return fmt.Errorf("%d connections waiting at the gate", n)
		}
		return nil
	})
	start := time.Now()
	if err := e.dial(tu.SelfSigned(t, "TSGW06ACM00000001")); err != nil {
		t.Fatalf("a gateway behind silent peers: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a gateway behind silent peers took %s", took)
	}
}

// A connection that waits at the gate past its connect timeout is closed,
// before any TLS byte is sent, and counted; once the gate is free again,
// gateways get through.
func TestIngestGateWaitPastConnectTimeoutCloses(t *testing.T) {
	e := newGateEnv(t, 1, 0, 500*time.Millisecond, 0)
	if err := e.l.gate.enter(time.Now().Add(time.Second)); err != nil { // the only slot, held
		t.Fatal(err)
	}
	cert := tu.SelfSigned(t, "TSGW06ACM00000001")
	start := time.Now()
	err := e.dial(cert)
	if err == nil {
		t.Fatal("a connection waiting past its connect timeout got through")
	}
	if !errors.Is(err, io.EOF) && !isConnError(err) {
		t.Errorf("client saw %v, want the connection closed", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("closed after %s, want about the connect timeout (500ms)", took)
	}
	select {
	case ev := <-e.refusals:
		if ev.Kind != EventRefused || ev.Reason != reasonHandshakeWait || ev.Tenant != "" {
			t.Errorf("recorded %+v, want an unattributed refusal %s", ev, reasonHandshakeWait)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no refusal recorded")
	}
	if got := tu.Counter(t, e.reg, "iotransit_ingest_connections_refused_total", map[string]string{"reason": reasonHandshakeWait}); got != 1 {
		t.Errorf("refusals %s = %v, want 1", reasonHandshakeWait, got)
	}
	e.l.gate.leave()
	if err := e.dial(cert); err != nil {
		t.Fatalf("after the gate was free: %v", err)
	}
}

// isConnError reports an error of the connection (a reset, for one).
func isConnError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

// The rate bound: handshakes past the burst start at the rate.
func TestIngestGatePacesHandshakes(t *testing.T) {
	const perSecond, n = 20.0, 8 // a burst of 2: 6 more need at least 300 ms
	e := newGateEnv(t, 4, perSecond, 20*time.Second, 0)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		cert := tu.SelfSigned(t, fmt.Sprintf("TSGW06ACM%08d", i))
		wg.Go(func() { errs[i] = e.dial(cert) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	// Each dial also waits 200 ms for the verdict; the bound is on the
	// handshakes' start, so it holds for the whole.
	if took, least := time.Since(start), time.Duration(float64(n-2)/perSecond*float64(time.Second)); took < least {
		t.Errorf("%d handshakes at %g/s took %s, want at least %s", n, perSecond, took, least)
	}
}
