package ingest

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// testListener returns a gateway listener on ln whose handshakes ask auth
// (nil: refuse every certificate as unknown_ca) and whose events go to
// emit.
func testListener(t *testing.T, ln net.Listener, auth func(tls.ConnectionState) (Identity, error), emit func(Event)) *tlsListener {
	t.Helper()
	if auth == nil {
		auth = func(tls.ConnectionState) (Identity, error) {
			return Identity{}, &registry.RefusedError{Reason: registry.ReasonUnknownCA}
		}
	}
	server := tu.SelfSigned(t, "localhost")
	return &tlsListener{
		id: "gateways", base: &tls.Config{Certificates: []tls.Certificate{*server}, ClientAuth: tls.RequireAnyClientCert},
		auth: auth, timeout: 5 * time.Second,
		pending: make(chan struct{}, 8), perAddr: map[string]int{}, perAddrMax: 8,
		m: newMetrics(prometheus.NewRegistry()), log: slog.New(tu.Logger(t).Handler()),
		emit: emit, conns: map[net.Conn]*gatewayConn{}, drain: time.Second, ln: ln,
	}
}

// failingAccept is a listener whose first Accept fails as it does when the
// process is out of file descriptors.
type failingAccept struct {
	net.Listener
	failed atomic.Bool
}

func (f *failingAccept) Accept() (net.Conn, error) {
	if !f.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return f.Listener.Accept()
}

// TestIngestListenerSurvivesAcceptErrors: running out of file descriptors
// (EMFILE, ENFILE: anyone can open connections to the API port, or to this
// one) makes Accept fail. Serve used to return for good on such an error:
// after it, no gateway could connect until the process restarted. Like
// net/http's Server, it waits and accepts again.
func TestIngestListenerSurvivesAcceptErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int64
	l := testListener(t, &failingAccept{Listener: inner}, nil, func(Event) { refused.Add(1) })
	served := make(chan struct{})
	go func() {
		defer close(served)
		l.Serve(func(string, net.Conn) error { return nil })
	}()
	defer func() { l.Close(nil); <-served }()
	// A bare connect after the failure: accepted, handshake refused, recorded.
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	tu.Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-served:
			return nil
		default:
		}
		if refused.Load() == 0 {
			return errors.New("the connection is not handled yet")
		}
		return nil
	})
	select {
	case <-served:
		t.Fatal("Serve returned after one failed Accept (EMFILE): the listener no longer accepts gateways")
	default:
	}
}

// TestIngestListenerAttributesRefusalsOnlyToProvedKeys: Go's TLS server
// asks VerifyConnection about a client certificate before it reads the
// CertificateVerify that proves the peer holds the key. A certificate is
// no secret, so a refusal is the tenant's (and names its gateway) only once
// the handshake succeeded; the connection is then closed without an alert
// and never reaches the broker. A copy of a certificate without its key is
// an unauthenticated refusal, the same whether the gateway is active or
// refused, in TLS 1.2 and 1.3.
func TestIngestListenerAttributesRefusalsOnlyToProvedKeys(t *testing.T) {
	const active, refused = "TSGW06ACM00000001", "TSGW06ACM00000004"
	auth := func(cs tls.ConnectionState) (Identity, error) {
		switch cn := cs.PeerCertificates[0].Subject.CommonName; cn {
		case active:
			return Identity{Tenant: "acme", Serial: cn}, nil
		case refused:
			return Identity{}, &registry.RefusedError{Reason: registry.ReasonRevoked, Tenant: "acme", Serial: cn}
		}
		return Identity{}, &registry.RefusedError{Reason: registry.ReasonUnknownCA}
	}
	activeCert, refusedCert := tu.SelfSigned(t, active), tu.SelfSigned(t, refused)
	otherKey := tu.SelfSigned(t, "attacker").PrivateKey
	withoutKey := func(c *tls.Certificate) *tls.Certificate {
		return &tls.Certificate{Certificate: c.Certificate, PrivateKey: otherKey}
	}
	const (
		decryptError   tls.AlertError = 51
		badCertificate tls.AlertError = 42
	)
	tests := []struct {
		name        string
		cert        *tls.Certificate
		established bool
		refusal     Event          // the refusal recorded (Kind refused), if not established
		alert       tls.AlertError // what the client reads; 0: the connection closes (EOF)
	}{
		{name: "active gateway", cert: activeCert, established: true},
		{name: "refused gateway with its key", cert: refusedCert, refusal: Event{Tenant: "acme", Serial: refused, Reason: registry.ReasonRevoked}},
		{name: "refused gateway's certificate without its key", cert: withoutKey(refusedCert), refusal: Event{Reason: reasonKeyNotProven}, alert: decryptError},
		{name: "active gateway's certificate without its key", cert: withoutKey(activeCert), refusal: Event{Reason: reasonKeyNotProven}, alert: decryptError},
		{name: "unknown certificate", cert: tu.SelfSigned(t, "stranger"), refusal: Event{Reason: registry.ReasonUnknownCA}, alert: badCertificate},
	}
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, tc := range tests {
			t.Run(tls.VersionName(version)+"/"+tc.name, func(t *testing.T) {
				inner, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				events := make(chan Event, 8)
				established := make(chan Identity, 1)
				l := testListener(t, inner, auth, func(e Event) { events <- e })
				served := make(chan struct{})
				go func() {
					defer close(served)
					l.Serve(func(_ string, c net.Conn) error {
						established <- c.(*gatewayConn).id
						return c.Close()
					})
				}()
				defer func() { l.Close(nil); <-served }()

				cfg := &tls.Config{Certificates: []tls.Certificate{*tc.cert}, InsecureSkipVerify: true, MinVersion: version, MaxVersion: version}
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", inner.Addr().String(), cfg)
				if err == nil { // TLS 1.3: a refusal comes after the client's handshake
					_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
					_, err = conn.Read(make([]byte, 1))
					conn.Close()
				}
				var op *net.OpError
				gotAlert := errors.As(err, &op) && op.Op == "remote error"
				switch {
				case tc.alert == 0 && !errors.Is(err, io.EOF):
					t.Errorf("client read %v, want the connection closed without an alert", err)
				case tc.alert != 0 && (!gotAlert || op.Err.Error() != tc.alert.Error()):
					t.Errorf("client read %v, want alert %v", err, tc.alert)
				}

				if tc.established {
					select {
					case id := <-established:
						if id.Tenant != "acme" || id.Serial != active {
							t.Errorf("established as %+v", id)
						}
					case e := <-events:
						t.Fatalf("refused: %+v", e)
					case <-time.After(5 * time.Second):
						t.Fatal("not established")
					}
					noVerdictsLeft(t, l)
					return
				}
				select {
				case e := <-events:
					want := tc.refusal
					if e.Kind != EventRefused || e.Tenant != want.Tenant || e.Serial != want.Serial || e.Reason != want.Reason || e.Remote == "" {
						t.Errorf("recorded %+v, want a refusal %+v", e, want)
					}
				case id := <-established:
					t.Fatalf("a refused connection reached the broker as %+v", id)
				case <-time.After(5 * time.Second):
					t.Fatal("no refusal recorded")
				}
				select {
				case id := <-established:
					t.Errorf("a refused connection reached the broker as %+v", id)
				default:
				}
				noVerdictsLeft(t, l)
			})
		}
	}
}

// noVerdictsLeft fails the test if a verdict of VerifyConnection was not
// taken by its handshake (they would pile up, one per failed handshake).
func noVerdictsLeft(t *testing.T, l *tlsListener) {
	t.Helper()
	n := 0
	l.verdicts.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d verdicts left after the handshake", n)
	}
}

// TestIngestListenerReleasesPeerCertificates: once the handshake decided
// who the gateway is, the connection no longer holds its parsed
// certificates (~6 KiB of an idle connection, issue 11): nothing reads them
// after the handshake, the Identity carries what is needed. The connection
// still carries data. A resumed session's certificates belong to crypto/
// tls's cache, shared with other connections: they are left as they are.
func TestIngestListenerReleasesPeerCertificates(t *testing.T) {
	const serial = "TSGW06ACM00000001"
	auth := func(cs tls.ConnectionState) (Identity, error) {
		if cn := cs.PeerCertificates[0].Subject.CommonName; cn != serial {
			return Identity{}, &registry.RefusedError{Reason: registry.ReasonUnknownCA}
		}
		return Identity{Tenant: "acme", Serial: serial, CertSerial: cs.PeerCertificates[0].SerialNumber.String()}, nil
	}
	cert := tu.SelfSigned(t, serial)
	type seen struct {
		id    Identity
		state tls.ConnectionState
	}
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := testListener(t, inner, auth, func(e Event) { t.Errorf("refused: %+v", e) })
			// Session tickets, which the gateway listener does not send (New),
			// for the resumed session's case.
			l.base.SessionTicketsDisabled = false
			sessions := make(chan seen, 2)
			served := make(chan struct{})
			go func() {
				defer close(served)
				l.Serve(func(_ string, c net.Conn) error {
					gc := c.(*gatewayConn)
					sessions <- seen{id: gc.id, state: gc.ConnectionState()}
					_, err := io.Copy(c, c) // echo until the client closes
					return err
				})
			}()
			defer func() { l.Close(nil); <-served }()

			cfg := &tls.Config{
				Certificates: []tls.Certificate{*cert}, InsecureSkipVerify: true, MinVersion: version, MaxVersion: version,
				ClientSessionCache: tls.NewLRUClientSessionCache(1),
			}
			for _, tc := range []struct {
				name    string
				resumed bool
			}{
				{name: "full handshake", resumed: false},
				{name: "resumed session", resumed: true},
			} {
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", inner.Addr().String(), cfg)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				// The echo proves the connection works after the release; reading it
				// also takes in TLS 1.3's session ticket, for the resumption.
				buf := make([]byte, 5)
				if _, err := conn.Write([]byte("hello")); err != nil {
					t.Fatalf("%s: write: %v", tc.name, err)
				}
				if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
					t.Fatalf("%s: echo %q, %v", tc.name, buf, err)
				}
				conn.Close()
				var s seen
				select {
				case s = <-sessions:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s: not established", tc.name)
				}
				if s.id.Tenant != "acme" || s.id.Serial != serial || s.id.CertSerial == "" {
					t.Errorf("%s: established as %+v", tc.name, s.id)
				}
				if s.state.DidResume != tc.resumed {
					t.Fatalf("%s: resumed %v, want %v", tc.name, s.state.DidResume, tc.resumed)
				}
				if len(s.state.PeerCertificates) != 1 {
					t.Fatalf("%s: %d peer certificates, want 1", tc.name, len(s.state.PeerCertificates))
				}
				if kept := s.state.PeerCertificates[0].Raw != nil; kept != tc.resumed {
					t.Errorf("%s: certificate kept %v, want %v", tc.name, kept, tc.resumed)
				}
			}
		})
	}
}
