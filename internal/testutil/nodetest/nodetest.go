// Package nodetest runs a node for end-to-end tests: Start starts a dev
// node on loopback ports with a temporary data directory; Gateway and
// Enroll provision gateways with certificates made from a CSR; ClientTLS,
// ServerPool and Dial reach the node as a gateway does; API is an HTTPS
// client of its management API. Only tests import it.
package nodetest

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/api"
	"github.com/iotransit/iotransit/internal/gateway"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil"
)

// Start starts a dev node on loopback with free ports and a temporary
// data directory; mod may adjust the configuration. It is closed at cleanup.
func Start(t testing.TB, mod func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.Config{
		DataDir:  t.TempDir(),
		MQTTAddr: "127.0.0.1:0",
		APIAddr:  "127.0.0.1:0",
		Dev:      true,
		Logger:   testutil.Logger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(n.Close)
	return n
}

// NoLimits lifts the API's rate limits, of requests and of what they read
// (for tests that send many requests).
func NoLimits(c *node.Config) {
	c.APILimits = api.Limits{PerCredential: 1e6, CredentialBurst: 1e6, PerIP: 1e6, IPBurst: 1e6, AuthFailures: 1e6,
		ReadsPerCredential: 1e9, ReadBurst: 1e9, ReadsPerTenant: 1e9, TenantReadBurst: 1e9}
}

// ServerPool returns a pool with the node's server CA.
func ServerPool(t testing.TB, n *node.Node) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(n.ServerCAPEM()) {
		t.Fatal("no server CA")
	}
	return pool
}

// ClientTLS returns a client configuration presenting cert (may be nil) and
// trusting the node's server CA.
func ClientTLS(t testing.TB, n *node.Node, cert *tls.Certificate) *tls.Config {
	t.Helper()
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ServerPool(t, n), ServerName: "127.0.0.1"}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// Gateway registers serial with tenant (created if missing), enrolls a key
// through a CSR and returns its client certificate.
func Gateway(t testing.TB, n *node.Node, tenant, serial string) *tls.Certificate {
	t.Helper()
	ctx := context.Background()
	if _, ok := n.Registry().Tenant(tenant); !ok {
		if _, err := n.CreateTenant(ctx, tenant); err != nil {
			t.Fatalf("create tenant %s: %v", tenant, err)
		}
	}
	if _, ok := n.Registry().Gateway(tenant, serial); !ok {
		if _, err := n.Registry().RegisterGateway(ctx, tenant, serial); err != nil {
			t.Fatalf("register %s: %v", serial, err)
		}
	}
	return Enroll(t, n, tenant, serial, 24*time.Hour)
}

// Enroll issues a certificate of the given validity to a registered gateway.
func Enroll(t testing.TB, n *node.Node, tenant, serial string, validity time.Duration) *tls.Certificate {
	t.Helper()
	return testutil.KeyPair(t, serial, func(_ crypto.Signer, csr []byte) ([]byte, error) {
		certPEM, _, err := n.Registry().IssueCertificate(context.Background(), tenant, serial, csr, validity)
		return certPEM, err
	})
}

// Dial connects a gateway over MQTT 5 with cert.
func Dial(t testing.TB, n *node.Node, cert *tls.Certificate, serial string, mod func(*gateway.UplinkConfig)) (*gateway.Uplink, error) {
	t.Helper()
	cfg := gateway.UplinkConfig{Addr: n.MQTTAddr(), Serial: serial, TLS: ClientTLS(t, n, cert)}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second*testutil.Slowdown())
	defer cancel()
	u, err := gateway.Dial(ctx, cfg)
	if err == nil {
		t.Cleanup(func() { _ = u.Close() })
	}
	return u, err
}

// Handshake makes one TLS handshake with addr and waits for the server's
// verdict (TLS 1.3 reports a refused client certificate after the client's
// side of the handshake has finished).
func Handshake(addr string, cfg *tls.Config) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Read(make([]byte, 1))
}
