package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
)

// serverSource returns a certificate source for "localhost" signed by ca,
// valid now (the TLS stack checks against the wall clock).
func serverSource(t testing.TB, ca *pki.CA) *pki.CertSource {
	t.Helper()
	if time.Now().After(ca.Cert.NotAfter) {
		t.Fatal("serverSource needs a CA valid now: use liveCA")
	}
	key := newKey(t)
	cert, _, err := ca.IssueServer(key.Public(), []string{"localhost", "127.0.0.1"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pki.NewCertSource(&tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
}

// liveCA returns a CA valid at the wall-clock time, which the TLS stack uses.
func liveCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("live test CA", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// gatewayCert returns a client certificate for serial signed by ca, valid now.
func gatewayCert(t testing.TB, ca *pki.CA) tls.Certificate {
	t.Helper()
	cert, key := signClient(t, ca, time.Now(), time.Hour)
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// verifyWith is the verification a listener would plug into GatewayTLSConfig.
func verifyWith(ca *pki.CA) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no client certificate")
		}
		return pki.VerifyClient(cs.PeerCertificates[0], cs.PeerCertificates[1:], ca.Cert, time.Now())
	}
}

type handshake struct {
	server, client error
	state          tls.ConnectionState // the server's view
}

// shake runs one TLS handshake over loopback TCP and returns both sides'
// errors. Both ends are closed at the end of the test.
func shake(t *testing.T, server, client *tls.Config) handshake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	deadline := time.Now().Add(10 * time.Second)
	type result struct {
		err   error
		state tls.ConnectionState
	}
	done := make(chan result, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		_ = raw.SetDeadline(deadline)
		srv := tls.Server(raw, server)
		defer srv.Close()
		err = srv.Handshake()
		if err == nil {
			// Echo one byte: a TLS 1.3 server has then processed the
			// client's certificate and Finished, and the client reads
			// either the byte or the refusal.
			b := make([]byte, 1)
			if _, err = srv.Read(b); err == nil {
				_, err = srv.Write(b)
			}
		}
		done <- result{err: err, state: srv.ConnectionState()}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(deadline)
	cli := tls.Client(raw, client)
	t.Cleanup(func() { _ = cli.Close() })
	var h handshake
	if h.client = cli.Handshake(); h.client == nil {
		// In TLS 1.3 a refusal of the client certificate arrives after the
		// client's handshake is done: the echo brings it.
		if _, h.client = cli.Write([]byte{1}); h.client == nil {
			_, h.client = io.ReadFull(cli, make([]byte, 1))
		}
	} else {
		_ = cli.Close()
	}
	r := <-done
	h.server, h.state = r.err, r.state
	return h
}

// isAlert reports whether err is the remote TLS alert want.
func isAlert(err error, want tls.AlertError) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error" && op.Err != nil && op.Err.Error() == want.Error()
}

func clientConfig(ca *pki.CA, certs ...tls.Certificate) *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: certs}
}

func TestPKIServerTLSConfig(t *testing.T) {
	c := pki.ServerTLSConfig(serverSource(t, liveCA(t)))
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", c.MinVersion)
	}
	if c.MaxVersion != 0 {
		t.Errorf("MaxVersion %x caps TLS 1.3", c.MaxVersion)
	}
	if c.GetCertificate == nil || len(c.Certificates) != 0 {
		t.Error("the certificate does not come from the rotating source")
	}
	if c.InsecureSkipVerify {
		t.Error("InsecureSkipVerify set")
	}
	// Every TLS 1.2 suite is ECDHE (forward secret) with an AEAD.
	for _, id := range c.CipherSuites {
		s := tls.CipherSuiteName(id)
		insecure := slices.ContainsFunc(tls.InsecureCipherSuites(), func(cs *tls.CipherSuite) bool { return cs.ID == id })
		if insecure || len(s) < 11 || s[:10] != "TLS_ECDHE_" || !(containsAny(s, "_GCM_", "CHACHA20_POLY1305")) {
			t.Errorf("cipher suite %s is not forward-secret AEAD", s)
		}
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		for i := 0; i+len(sub) <= len(s); i++ {
			if s[i:i+len(sub)] == sub {
				return true
			}
		}
	}
	return false
}

func TestPKIGatewayTLSConfig(t *testing.T) {
	called := false
	c := pki.GatewayTLSConfig(serverSource(t, liveCA(t)), func(tls.ConnectionState) error { called = true; return nil })
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", c.MinVersion)
	}
	if c.ClientAuth != tls.RequireAnyClientCert {
		t.Errorf("ClientAuth %v, want RequireAnyClientCert", c.ClientAuth)
	}
	if c.ClientCAs != nil {
		t.Error("ClientCAs set: the CA list would be sent to every client")
	}
	if c.VerifyConnection == nil {
		t.Fatal("no VerifyConnection")
	}
	_ = c.VerifyConnection(tls.ConnectionState{})
	if !called {
		t.Error("VerifyConnection is not the given function")
	}
}

func TestPKICertSourceRotates(t *testing.T) {
	ca := liveCA(t)
	src := serverSource(t, ca)
	first, _ := src.GetCertificate(nil)
	next := serverSource(t, ca)
	nc, _ := next.GetCertificate(nil)
	src.Set(nc)
	if got, _ := src.GetCertificate(nil); got != nc || got == first {
		t.Fatal("Set did not replace the served certificate")
	}
}

func TestPKIHandshake(t *testing.T) {
	ca := liveCA(t)
	src := serverSource(t, ca)
	gw := gatewayCert(t, ca)
	foreign := gatewayCert(t, liveCA(t))
	tests := []struct {
		name        string
		server      *tls.Config
		client      *tls.Config
		wantVersion uint16 // 0: refused
		wantAlert   tls.AlertError
	}{
		{
			name:        "TLS 1.3",
			server:      pki.ServerTLSConfig(src),
			client:      &tls.Config{RootCAs: clientConfig(ca).RootCAs, ServerName: "localhost", MinVersion: tls.VersionTLS13},
			wantVersion: tls.VersionTLS13,
		},
		{
			name:        "TLS 1.3 preferred",
			server:      pki.ServerTLSConfig(src),
			client:      clientConfig(ca),
			wantVersion: tls.VersionTLS13,
		},
		{
			name:        "TLS 1.2",
			server:      pki.ServerTLSConfig(src),
			client:      &tls.Config{RootCAs: clientConfig(ca).RootCAs, ServerName: "localhost", MaxVersion: tls.VersionTLS12},
			wantVersion: tls.VersionTLS12,
		},
		{
			name:      "TLS 1.1 refused",
			server:    pki.ServerTLSConfig(src),
			client:    &tls.Config{RootCAs: clientConfig(ca).RootCAs, ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
			wantAlert: 70, // protocol_version
		},
		{
			name:   "TLS 1.2 without forward secrecy refused",
			server: pki.ServerTLSConfig(src),
			client: &tls.Config{RootCAs: clientConfig(ca).RootCAs, ServerName: "localhost", MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384}},
			wantAlert: 40, // handshake_failure
		},
		{
			name:        "gateway TLS 1.3 with tenant certificate",
			server:      pki.GatewayTLSConfig(src, verifyWith(ca)),
			client:      clientConfig(ca, gw),
			wantVersion: tls.VersionTLS13,
		},
		{
			name:        "gateway TLS 1.2 with tenant certificate",
			server:      pki.GatewayTLSConfig(src, verifyWith(ca)),
			client:      &tls.Config{RootCAs: clientConfig(ca).RootCAs, ServerName: "localhost", MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{gw}},
			wantVersion: tls.VersionTLS12,
		},
		{
			name:      "gateway without certificate",
			server:    pki.GatewayTLSConfig(src, verifyWith(ca)),
			client:    clientConfig(ca),
			wantAlert: 116, // certificate_required (TLS 1.3)
		},
		{
			name:      "gateway with foreign certificate",
			server:    pki.GatewayTLSConfig(src, verifyWith(ca)),
			client:    clientConfig(ca, foreign),
			wantAlert: 42, // bad_certificate: VerifyConnection refused it
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := shake(t, tc.server, tc.client)
			if tc.wantVersion != 0 {
				if h.server != nil || h.client != nil {
					t.Fatalf("handshake failed: server %v, client %v", h.server, h.client)
				}
				if h.state.Version != tc.wantVersion {
					t.Fatalf("version %s, want %s", tls.VersionName(h.state.Version), tls.VersionName(tc.wantVersion))
				}
				if len(tc.client.Certificates) > 0 && len(h.state.PeerCertificates) == 0 {
					t.Fatal("server did not get the client certificate")
				}
				return
			}
			if h.server == nil {
				t.Fatalf("server accepted the connection (client error %v)", h.client)
			}
			if !isAlert(h.client, tc.wantAlert) {
				t.Fatalf("client error %v, want alert %v (server error %v)", h.client, tc.wantAlert, h.server)
			}
		})
	}
}

func TestPKIGatewayHandshakeSendsNoCANames(t *testing.T) {
	ca := liveCA(t)
	gw := gatewayCert(t, ca)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			var asked *tls.CertificateRequestInfo
			client := clientConfig(ca)
			client.MinVersion, client.MaxVersion = version, version
			client.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
				asked = cri
				return &gw, nil
			}
			h := shake(t, pki.GatewayTLSConfig(serverSource(t, ca), verifyWith(ca)), client)
			if h.server != nil || h.client != nil {
				t.Fatalf("handshake failed: server %v, client %v", h.server, h.client)
			}
			if asked == nil {
				t.Fatal("server did not request a client certificate")
			}
			if len(asked.AcceptableCAs) != 0 {
				t.Fatalf("server named %d acceptable CAs to an unauthenticated client", len(asked.AcceptableCAs))
			}
		})
	}
}
