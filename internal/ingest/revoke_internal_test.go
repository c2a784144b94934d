package ingest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// oneGateway is a registry holding one gateway; onRead, when set, runs once
// at the next read of it (what the registry does meanwhile: a revocation
// and its notify).
type oneGateway struct {
	mu     sync.Mutex
	g      registry.Gateway
	onRead func()
}

func (d *oneGateway) Tenant(string) (registry.Tenant, bool) { return registry.Tenant{}, true }

func (d *oneGateway) Gateway(tenant, serial string) (registry.Gateway, bool) {
	d.mu.Lock()
	f := d.onRead
	d.onRead = nil
	d.mu.Unlock()
	if f != nil {
		f()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.g, tenant == d.g.Tenant && serial == d.g.Serial
}

func (d *oneGateway) GatewayDeploymentGroup(tenant, serial string) (string, bool) {
	g, ok := d.Gateway(tenant, serial)
	return g.DeploymentGroupID, ok
}

func (d *oneGateway) Authenticate([]*x509.Certificate, time.Time) (registry.Identity, error) {
	return registry.Identity{}, errors.New("not used")
}

// gatewayClient returns a mochi client of id on a TLS connection whose
// peer reads and discards what it gets.
func gatewayClient(t *testing.T, broker *mqtt.Server, id Identity) *mqtt.Client {
	t.Helper()
	a, b := net.Pipe()
	server := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{*tu.SelfSigned(t, "localhost")}})
	client := tls.Client(b, &tls.Config{InsecureSkipVerify: true})
	done := make(chan error, 1)
	go func() { done <- client.Handshake() }()
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, client) }()
	t.Cleanup(func() { _, _ = a.Close(), b.Close() })
	cl := broker.NewClient(&gatewayConn{Conn: server, id: id}, "gateways", "", false)
	cl.Properties.ProtocolVersion = 5
	return cl
}

// TestIngestRevokedWhileAConnectIsCheckedEndsTheLiveSession: a gateway
// with a live session connects again; its revocation comes between the
// new session's registration and its re-check (stillValid). The
// revocation's kick found the new session (it had displaced the live one
// as the gateway's session), the re-check refused the new one and
// forgot it, and the live session, no longer the gateway's for any kick,
// went on: a revoked gateway uploading for as long as it kept the
// connection.
func TestIngestRevokedWhileAConnectIsCheckedEndsTheLiveSession(t *testing.T) {
	const tenant, serial = "acme", "TSGW06ACM00000001"
	now := time.Now()
	dir := &oneGateway{g: registry.Gateway{Tenant: tenant, Serial: serial, State: registry.StateActive, Incarnation: "i1",
		Certificates: []registry.Certificate{{Serial: "c1", NotAfter: now.Add(time.Hour)}, {Serial: "c2", NotAfter: now.Add(time.Hour)}}}}
	broker := mqtt.New(nil)
	core := &Core{m: newMetrics(prometheus.NewRegistry())}
	h := newHook(Config{MaxConnsPerTenant: 10, MaxKeepalive: time.Minute}, broker, dir, core, func(Event) {}, slog.New(tu.Logger(t).Handler()))
	connect := &packets.Packet{Connect: packets.ConnectParams{ClientIdentifier: serial}}

	live := gatewayClient(t, broker, Identity{Tenant: tenant, Serial: serial, CertSerial: "c1"})
	live.ID = serial
	if err := h.OnConnect(live, *connect); err != nil {
		t.Fatalf("first connect: %v", err)
	}
	broker.Clients.Add(live) // as mochi does once CONNECT is accepted

	// The revocation lands as the next connect is checked: the registry's
	// memory, then its notify, which kicks the gateway's session.
	dir.onRead = func() {
		dir.mu.Lock()
		dir.g.State = registry.StateRevoked
		dir.mu.Unlock()
		h.kick(tenant, serial, func(string) string { return EndRevoked })
	}
	next := gatewayClient(t, broker, Identity{Tenant: tenant, Serial: serial, CertSerial: "c2"})
	next.ID = serial
	if err := h.OnConnect(next, *connect); err == nil {
		t.Fatal("a connect checked after the revocation was accepted")
	}
	if !live.Closed() {
		t.Error("the revoked gateway's live session was left open")
	}
}
