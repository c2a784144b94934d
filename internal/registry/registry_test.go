package registry_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/backbone/names"
	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

const (
	gw1 = "TSGW06DEV00000001"
	gw2 = "TSGW06DEV00000002"
	gw3 = "TSGW06DEV00000003"
)

// propagation is the DESIGN §3 bound for a change to reach every node.
const propagation = time.Second

func TestRegistryValidTenantID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{name: "letters", id: "acme", want: true},
		{name: "two characters", id: "ab", want: true},
		{name: "digits", id: "42", want: true},
		{name: "dash inside", id: "acme-prod-1", want: true},
		{name: "double dash", id: "a--b", want: true},
		{name: "32 characters", id: strings.Repeat("a", 32), want: true},
		{name: "empty", id: ""},
		{name: "one character", id: "a"},
		{name: "33 characters", id: strings.Repeat("a", 33)},
		{name: "leading dash", id: "-acme"},
		{name: "trailing dash", id: "acme-"},
		{name: "only dashes", id: "--"},
		{name: "uppercase", id: "Acme"},
		{name: "underscore", id: "ac_me"},
		{name: "dot", id: "a.b"},
		{name: "path traversal", id: "../x"},
		{name: "slash", id: "a/b"},
		{name: "backslash", id: `a\b`},
		{name: "NATS wildcard star", id: "*"},
		{name: "NATS wildcard star inside", id: "ac*me"},
		{name: "NATS wildcard tail", id: ">"},
		{name: "NATS wildcard tail inside", id: "acme>"},
		{name: "space", id: "ac me"},
		{name: "leading space", id: " acme"},
		{name: "trailing space", id: "acme "},
		{name: "tab", id: "ac\tme"},
		{name: "newline", id: "acme\n"},
		{name: "NUL", id: "acme\x00"},
		{name: "unicode letter", id: "acmé"},
		{name: "fullwidth letters", id: "ａｃｍｅ"},
		{name: "cyrillic look-alike", id: "асме"},
		{name: "SQL quote", id: "acme'--"},
		{name: "SQL statement", id: "x;drop table tenants"},
		{name: "SQL or", id: "a' or '1'='1"},
		{name: "percent encoding", id: "a%2e"},
		{name: "dollar", id: "$sys"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := registry.ValidTenantID(tc.id); got != tc.want {
				t.Fatalf("ValidTenantID(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}

func TestRegistryValidSerial(t *testing.T) {
	tests := []struct {
		name   string
		serial string
		want   bool
	}{
		{name: "design example", serial: "TSGW06DEV00000001", want: true},
		{name: "all digits after prefix", serial: "ABCD1200000000000", want: true},
		{name: "all letters after prefix", serial: "ABCD12ZZZZZZZZZZZ", want: true},
		{name: "empty", serial: ""},
		{name: "16 characters", serial: "TSGW06DEV0000001"},
		{name: "18 characters", serial: "TSGW06DEV000000001"},
		{name: "lowercase", serial: "tsgw06dev00000001"},
		{name: "lowercase tail", serial: "TSGW06dev00000001"},
		{name: "digit in prefix", serial: "TSG106DEV00000001"},
		{name: "letter in digits", serial: "TSGW0ADEV00000001"},
		{name: "dash", serial: "TSGW06-EV00000001"},
		{name: "dot", serial: "TSGW06DEV.0000001"},
		{name: "path traversal", serial: "../GW06DEV00000001"},
		{name: "slash", serial: "TSGW06DEV/0000001"},
		{name: "NATS wildcard star", serial: "TSGW06DEV0000000*"},
		{name: "NATS wildcard tail", serial: "TSGW06DEV0000000>"},
		{name: "only a wildcard", serial: ">"},
		{name: "space", serial: "TSGW06DEV 0000001"},
		{name: "trailing newline", serial: "TSGW06DEV0000001\n"},
		{name: "NUL", serial: "TSGW06DEV0000001\x00"},
		// 16 runes but 17 bytes: length alone must not pass it.
		{name: "unicode in 17 bytes", serial: "TSGW06DEV000000Ä"},
		{name: "unicode", serial: "TSGW06DEV0000000Ä"},
		{name: "SQL", serial: "TSGW06' OR 1=1--X"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := registry.ValidSerial(tc.serial); got != tc.want {
				t.Fatalf("ValidSerial(%q) = %v, want %v", tc.serial, got, tc.want)
			}
		})
	}
}

func TestRegistryCreateTenant(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	ten := mustTenant(t, n, "acme")
	if ten.ID != "acme" || ten.CreatedAt.IsZero() || len(ten.CAKey) == 0 {
		t.Fatalf("tenant record %+v", ten)
	}
	caCert, err := pki.ParseCertPEM([]byte(ten.CACert))
	if err != nil || !caCert.IsCA {
		t.Fatalf("tenant CA certificate: %v", err)
	}
	if got, ok := n.reg.Tenant("acme"); !ok || got.CACert != ten.CACert {
		t.Fatal("Tenant() does not return the created tenant")
	}
	if id, cert, ok := n.reg.TenantByCA(caCert.SubjectKeyId); !ok || id != "acme" || !cert.Equal(caCert) {
		t.Fatalf("TenantByCA = %q, %v", id, ok)
	}
	if _, _, ok := n.reg.TenantByCA([]byte("unknown")); ok {
		t.Fatal("TenantByCA found a tenant for an unknown key id")
	}

	tests := []struct {
		name    string
		id      string
		wantErr interface{ Is(error) bool }
	}{
		{name: "again", id: "acme", wantErr: registry.ErrTenantExists},
		{name: "invalid id", id: "../acme", wantErr: registry.ErrTenantInvalid},
		{name: "wildcard", id: ">", wantErr: registry.ErrTenantInvalid},
		{name: "uppercase", id: "ACME", wantErr: registry.ErrTenantInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := call(func(c context.Context) (registry.Tenant, error) { return n.reg.CreateTenant(c, tc.id) })
			if !tc.wantErr.Is(err) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
		})
	}
	mustTenant(t, n, "beta")
	ids := []string{}
	for _, tt := range n.reg.Tenants() {
		ids = append(ids, tt.ID)
	}
	if !slices.Equal(ids, []string{"acme", "beta"}) {
		t.Fatalf("Tenants() = %v", ids)
	}
}

func TestRegistryCreateTenantSealsCAKey(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	ca, err := call(func(c context.Context) (*pki.CA, error) { return n.reg.CA(c, "acme") })
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.KeyDER()
	if err != nil {
		t.Fatal(err)
	}
	cx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := c.bb.KV(cx, names.TenantsBucket, 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(cx, "acme")
	if err != nil {
		t.Fatalf("raw tenant record: %v", err)
	}
	raw := e.Value()
	// JSON carries []byte as base64: look for both forms.
	for _, form := range [][]byte{der, []byte(base64.StdEncoding.EncodeToString(der))} {
		if bytes.Contains(raw, form) {
			t.Fatal("the stored tenant record holds the CA key in clear")
		}
	}
	var rec registry.Tenant
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(rec.CAKey, der[len(der)-40:]) || bytes.Equal(rec.CAKey, der) {
		t.Fatal("the stored CA key is not sealed")
	}
	// Sealed under the tenant's data key: another tenant's key cannot open it.
	if err := n.keys.EnsureTenant(cx, "other"); err != nil {
		t.Fatal(err)
	}
	for _, aad := range []string{"", "registry/ca-key"} {
		if _, err := n.keys.Open(cx, "other", rec.CAKey, []byte(aad)); err == nil {
			t.Fatal("another tenant's data key opened the CA key")
		}
	}
}

func TestRegistryCreateTenantRaceOneWins(t *testing.T) {
	c := newCluster(t)
	a, b := c.open(), c.open()
	// b may or may not have seen a's tenant yet: either way it is refused.
	mustTenant(t, a, "acme")
	if _, err := call(func(c context.Context) (registry.Tenant, error) { return b.reg.CreateTenant(c, "acme") }); !registry.ErrTenantExists.Is(err) {
		t.Fatalf("second node: %v, want ErrTenantExists", err)
	}
	// And the CA stays a's.
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		ta, _ := a.reg.Tenant("acme")
		tb, ok := b.reg.Tenant("acme")
		if !ok || tb.CACert != ta.CACert {
			return errors.New("b does not have a's tenant")
		}
		return nil
	})
}

func TestRegistryRegisterGateway(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	mustTenant(t, n, "beta")
	g := mustGateway(t, n, "acme", gw2)
	if g.Tenant != "acme" || g.Serial != gw2 || g.State != registry.StateActive || g.CreatedAt.IsZero() {
		t.Fatalf("gateway record %+v", g)
	}
	if got, ok := n.reg.Gateway("acme", gw2); !ok || got.State != registry.StateActive {
		t.Fatal("Gateway() does not return the registered gateway")
	}
	if _, ok := n.reg.Gateway("beta", gw2); ok {
		t.Fatal("the gateway is visible in another tenant")
	}
	tests := []struct {
		name    string
		tenant  string
		serial  string
		wantErr interface{ Is(error) bool }
	}{
		{name: "same serial again", tenant: "acme", serial: gw2, wantErr: registry.ErrGatewayExists},
		{name: "same serial in another tenant", tenant: "beta", serial: gw2, wantErr: registry.ErrGatewayExists},
		{name: "unknown tenant", tenant: "nobody", serial: gw3, wantErr: registry.ErrTenantNotFound},
		{name: "invalid tenant", tenant: "../acme", serial: gw3, wantErr: registry.ErrTenantNotFound},
		{name: "invalid serial", tenant: "acme", serial: "tsgw06dev00000003", wantErr: registry.ErrSerialInvalid},
		{name: "wildcard serial", tenant: "acme", serial: ">", wantErr: registry.ErrSerialInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := call(func(c context.Context) (registry.Gateway, error) {
				return n.reg.RegisterGateway(c, tc.tenant, tc.serial)
			})
			if !tc.wantErr.Is(err) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
		})
	}
	// A refused registration does not reserve the serial.
	mustGateway(t, n, "beta", gw3)
	mustGateway(t, n, "acme", gw1)
	gws, err := n.reg.Gateways("acme")
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for _, g := range gws {
		serials = append(serials, g.Serial)
	}
	if !slices.Equal(serials, []string{gw1, gw2}) {
		t.Fatalf("Gateways(acme) = %v", serials)
	}
	if _, err := n.reg.Gateways("nobody"); !registry.ErrTenantNotFound.Is(err) {
		t.Fatalf("Gateways(nobody): %v", err)
	}
}

func TestRegistryIssueCertificate(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	ten := mustTenant(t, n, "acme")
	mustTenant(t, n, "beta")
	mustGateway(t, n, "acme", gw1)
	caCert, err := pki.ParseCertPEM([]byte(ten.CACert))
	if err != nil {
		t.Fatal(err)
	}

	is := mustIssue(t, n, "acme", gw1)
	leaf := is.cert.Leaf
	if leaf.Subject.CommonName != gw1 {
		t.Fatalf("CN %q", leaf.Subject.CommonName)
	}
	if err := pki.VerifyClient(leaf, nil, caCert, time.Now()); err != nil {
		t.Fatalf("certificate does not chain to the tenant CA: %v", err)
	}
	if id, _, ok := n.reg.TenantByCA(leaf.AuthorityKeyId); !ok || id != "acme" {
		t.Fatalf("TenantByCA(leaf AKI) = %q, %v", id, ok)
	}
	if is.rec.Serial != pki.SerialHex(leaf) || is.rec.Fingerprint != pki.Fingerprint(leaf) || is.rec.RevokedAt != nil {
		t.Fatalf("record %+v does not describe the certificate", is.rec)
	}
	g, _ := n.reg.Gateway("acme", gw1)
	if got, ok := g.Certificate(is.rec.Serial); !ok || got.Fingerprint != is.rec.Fingerprint || !got.NotAfter.Equal(leaf.NotAfter) {
		t.Fatalf("certificate not recorded on the gateway: %+v", g.Certificates)
	}
	beta, _ := n.reg.Tenant("beta")
	betaCA, _ := pki.ParseCertPEM([]byte(beta.CACert))
	if err := pki.VerifyClient(leaf, nil, betaCA, time.Now()); !errors.Is(err, pki.ErrChainUnknownCA) {
		t.Fatalf("acme's certificate against beta's CA: %v", err)
	}

	mustGateway(t, n, "acme", gw2)
	mustGateway(t, n, "acme", gw3)
	mustState(t, n, "acme", gw2, registry.StateIsolated)
	mustState(t, n, "acme", gw3, registry.StateRevoked)
	other, _ := csrFor(t, gw2)
	tests := []struct {
		name    string
		tenant  string
		serial  string
		csr     []byte
		wantErr interface{ Is(error) bool }
	}{
		{name: "CN of another gateway", tenant: "acme", serial: gw1, csr: other, wantErr: pki.ErrCSRCNMismatch},
		{name: "not a CSR", tenant: "acme", serial: gw1, csr: []byte("x"), wantErr: pki.ErrCSRInvalid},
		{name: "isolated gateway", tenant: "acme", serial: gw2, wantErr: registry.ErrGatewayNotActive},
		{name: "revoked gateway", tenant: "acme", serial: gw3, wantErr: registry.ErrGatewayNotActive},
		{name: "gateway of another tenant", tenant: "beta", serial: gw1, wantErr: registry.ErrGatewayNotFound},
		{name: "unknown tenant", tenant: "nobody", serial: gw1, wantErr: registry.ErrTenantNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := n.reg.Gateway(tc.tenant, tc.serial)
			csr := tc.csr
			if csr == nil {
				csr, _ = csrFor(t, tc.serial)
			}
			_, err := call(func(c context.Context) ([]byte, error) {
				b, _, err := n.reg.IssueCertificate(c, tc.tenant, tc.serial, csr, time.Hour)
				return b, err
			})
			if !tc.wantErr.Is(err) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if after, _ := n.reg.Gateway(tc.tenant, tc.serial); len(after.Certificates) != len(before.Certificates) {
				t.Fatal("a refused issue was recorded")
			}
		})
	}
	// A second certificate is recorded next to the first.
	second := mustIssue(t, n, "acme", gw1)
	g, _ = n.reg.Gateway("acme", gw1)
	if len(g.Certificates) != 2 || second.rec.Serial == is.rec.Serial {
		t.Fatalf("certificates %+v", g.Certificates)
	}
}

func TestRegistrySetGatewayState(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	mustGateway(t, n, "acme", gw1)
	tests := []struct {
		name    string
		serial  string
		state   registry.GatewayState
		want    registry.GatewayState
		wantErr interface{ Is(error) bool }
	}{
		{name: "isolate", serial: gw1, state: registry.StateIsolated, want: registry.StateIsolated},
		{name: "isolate again", serial: gw1, state: registry.StateIsolated, want: registry.StateIsolated},
		{name: "reactivate", serial: gw1, state: registry.StateActive, want: registry.StateActive},
		{name: "unknown state", serial: gw1, state: "deleted", wantErr: registry.ErrStateInvalid},
		{name: "empty state", serial: gw1, state: "", wantErr: registry.ErrStateInvalid},
		{name: "unknown gateway", serial: gw2, state: registry.StateIsolated, wantErr: registry.ErrGatewayNotFound},
		{name: "revoke", serial: gw1, state: registry.StateRevoked, want: registry.StateRevoked},
		{name: "revoked cannot become active", serial: gw1, state: registry.StateActive, wantErr: registry.ErrGatewayNotActive},
		{name: "revoked cannot become isolated", serial: gw1, state: registry.StateIsolated, wantErr: registry.ErrGatewayNotActive},
		{name: "revoke again", serial: gw1, state: registry.StateRevoked, want: registry.StateRevoked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := call(func(c context.Context) (registry.Gateway, error) {
				return n.reg.SetGatewayState(c, "acme", tc.serial, tc.state)
			})
			if tc.wantErr != nil {
				if !tc.wantErr.Is(err) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || g.State != tc.want {
				t.Fatalf("state %q, %v; want %q", g.State, err, tc.want)
			}
			if cached, _ := n.reg.Gateway("acme", tc.serial); cached.State != tc.want {
				t.Fatalf("cached state %q, want %q", cached.State, tc.want)
			}
		})
	}
	if _, err := call(func(c context.Context) (registry.Gateway, error) {
		return n.reg.SetGatewayState(c, "nobody", gw1, registry.StateIsolated)
	}); !registry.ErrTenantNotFound.Is(err) {
		t.Fatalf("unknown tenant: %v", err)
	}
}

func TestRegistryRevokeRevokesEveryCertificate(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	mustGateway(t, n, "acme", gw1)
	mustGateway(t, n, "acme", gw2)
	a, b := mustIssue(t, n, "acme", gw1), mustIssue(t, n, "acme", gw1)
	other := mustIssue(t, n, "acme", gw2)
	_ = other.rec
	mustState(t, n, "acme", gw1, registry.StateIsolated) // isolating revokes nothing
	if g, _ := n.reg.Gateway("acme", gw1); g.Certificates[0].RevokedAt != nil || g.Certificates[1].RevokedAt != nil {
		t.Fatal("isolating revoked certificates")
	}
	g := mustState(t, n, "acme", gw1, registry.StateRevoked)
	for _, serial := range []string{a.rec.Serial, b.rec.Serial} {
		rec, ok := g.Certificate(serial)
		if !ok || rec.RevokedAt == nil {
			t.Fatalf("certificate %s not revoked: %+v", serial, rec)
		}
	}
	first, _ := g.Certificate(a.rec.Serial)
	again := mustState(t, n, "acme", gw1, registry.StateRevoked)
	if rec, _ := again.Certificate(a.rec.Serial); !rec.RevokedAt.Equal(*first.RevokedAt) {
		t.Fatal("revoking again moved the revocation time")
	}
	if g2, _ := n.reg.Gateway("acme", gw2); g2.State != registry.StateActive || g2.Certificates[0].RevokedAt != nil {
		t.Fatalf("another gateway was touched: %+v", g2)
	}
}

func TestRegistrySecondNodeSeesChangesWithinOneSecond(t *testing.T) {
	c := newCluster(t)
	a, b := c.open(), c.open()
	seenB := watch(b)

	mustTenant(t, a, "acme")
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		if _, ok := b.reg.Tenant("acme"); !ok {
			return errors.New("b does not see the tenant")
		}
		return nil
	})
	mustGateway(t, a, "acme", gw1)
	is := mustIssue(t, a, "acme", gw1)
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		g, ok := b.reg.Gateway("acme", gw1)
		if !ok {
			return errors.New("b does not see the gateway")
		}
		if _, ok := g.Certificate(is.rec.Serial); !ok {
			return errors.New("b does not see the certificate")
		}
		return nil
	})

	start := time.Now()
	mustState(t, a, "acme", gw1, registry.StateRevoked)
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		g, _ := b.reg.Gateway("acme", gw1)
		if g.State != registry.StateRevoked {
			return fmt.Errorf("b sees state %q", g.State)
		}
		if rec, _ := g.Certificate(is.rec.Serial); rec.RevokedAt == nil {
			return errors.New("b does not see the certificate revoked")
		}
		if states := seenB.of(gw1); len(states) == 0 || states[len(states)-1] != registry.StateRevoked {
			return fmt.Errorf("b's callbacks saw %v", states)
		}
		return nil
	})
	t.Logf("revocation reached the second registry in %s", time.Since(start))

	// The second node opens the sealed CA key and signs; the first sees it.
	ca, err := call(func(cx context.Context) (*pki.CA, error) { return b.reg.CA(cx, "acme") })
	if err != nil {
		t.Fatalf("CA on the second registry: %v", err)
	}
	ten, _ := a.reg.Tenant("acme")
	if string(ca.CertPEM) != ten.CACert {
		t.Fatal("the second registry has another CA")
	}
	mustGateway(t, b, "acme", gw2)
	fromB := mustIssue(t, b, "acme", gw2)
	caCert, _ := pki.ParseCertPEM([]byte(ten.CACert))
	if err := pki.VerifyClient(fromB.cert.Leaf, nil, caCert, time.Now()); err != nil {
		t.Fatalf("certificate issued on the second registry: %v", err)
	}
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		g, _ := a.reg.Gateway("acme", gw2)
		if _, ok := g.Certificate(fromB.rec.Serial); !ok {
			return errors.New("a does not see b's certificate")
		}
		return nil
	})
}

// The registry keeps following changes after the contexts of Open and of
// CreateTenant are done (a start-up timeout, an API request).
func TestRegistryWatchesOutliveCallerContexts(t *testing.T) {
	c := newCluster(t)
	a, b := c.open(), c.open() // both Open contexts are already cancelled
	mustTenant(t, a, "acme")   // and so is this one, on a
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		if _, ok := b.reg.Tenant("acme"); !ok {
			return errors.New("b does not see a tenant created after its Open returned")
		}
		return nil
	})
	// b writes, a (whose gateway watch was started by CreateTenant) sees it.
	mustGateway(t, b, "acme", gw1)
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		if _, ok := a.reg.Gateway("acme", gw1); !ok {
			return errors.New("a does not see a gateway registered on b")
		}
		return nil
	})
	// c is opened after the tenant exists: it loads it, and starts its
	// gateway watch, within Open, whose context ends when Open returns.
	cn := c.open()
	mustState(t, b, "acme", gw1, registry.StateRevoked)
	for _, x := range []struct {
		name string
		n    *node
	}{{"a", a}, {"c", cn}} {
		tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
			if g, _ := x.n.reg.Gateway("acme", gw1); g.State != registry.StateRevoked {
				return fmt.Errorf("%s sees state %q after b revoked", x.name, g.State)
			}
			return nil
		})
	}
}

func TestRegistryCacheNeverGoesBack(t *testing.T) {
	c := newCluster(t)
	a, b := c.open(), c.open()
	seenA, seenB := watch(a), watch(b)
	mustTenant(t, a, "acme")
	mustGateway(t, a, "acme", gw1)
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		if _, ok := b.reg.Gateway("acme", gw1); !ok {
			return errors.New("b does not see the gateway")
		}
		return nil
	})
	// Quick changes from both nodes, each reading its own cache right after.
	steps := []struct {
		n     *node
		state registry.GatewayState
	}{
		{a, registry.StateIsolated}, {b, registry.StateActive}, {a, registry.StateIsolated},
		{a, registry.StateActive}, {b, registry.StateIsolated}, {a, registry.StateRevoked},
	}
	reg, _ := a.reg.Gateway("acme", gw1)
	written := []registry.Gateway{reg}
	for _, s := range steps {
		written = append(written, mustState(t, s.n, "acme", gw1, s.state))
		if g, _ := s.n.reg.Gateway("acme", gw1); g.State != s.state {
			t.Fatalf("the writer reads %q right after writing %q", g.State, s.state)
		}
	}
	// A barrier: a write to the same bucket from the other node. Once it is
	// seen, the watch has delivered every earlier revision.
	for _, x := range []struct {
		name   string
		reader *node
		writer *node
		serial string
		seen   *changes
	}{
		{name: "a", reader: a, writer: b, serial: gw2, seen: seenA},
		{name: "b", reader: b, writer: a, serial: gw3, seen: seenB},
	} {
		mustGateway(t, x.writer, "acme", x.serial)
		tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
			if _, ok := x.reader.reg.Gateway("acme", x.serial); !ok {
				return fmt.Errorf("%s has not seen the barrier", x.name)
			}
			return nil
		})
		g, _ := x.reader.reg.Gateway("acme", gw1)
		if g.State != registry.StateRevoked {
			t.Errorf("%s went back to %q after the watch caught up", x.name, g.State)
		}
		// Callbacks report the writes in order, each at most once (a
		// superseded one may be skipped), and end with the final state.
		seen := x.seen.records(gw1)
		if !isSubsequence(seen, written) {
			t.Errorf("%s's callbacks %v are not an in-order subsequence of the writes %v", x.name, summary(seen), summary(written))
		}
		if len(seen) == 0 || seen[len(seen)-1].State != registry.StateRevoked {
			t.Errorf("%s's last callback for the gateway: %v", x.name, summary(seen))
		}
	}
}

// isSubsequence reports whether every record of got appears in want, in
// want's order, at most once.
func isSubsequence(got, want []registry.Gateway) bool {
	i := 0
	for _, g := range got {
		for i < len(want) && !(want[i].State == g.State && want[i].UpdatedAt.Equal(g.UpdatedAt)) {
			i++
		}
		if i == len(want) {
			return false
		}
		i++
	}
	return true
}

func summary(gs []registry.Gateway) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = string(g.State) + "@" + g.UpdatedAt.Format("15:04:05.000000000")
	}
	return out
}

func TestRegistryRestartKeepsRecordsAndCA(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	ten := mustTenant(t, n, "acme")
	mustTenant(t, n, "beta")
	mustGateway(t, n, "acme", gw1)
	mustGateway(t, n, "acme", gw2)
	mustGateway(t, n, "beta", gw3)
	old := mustIssue(t, n, "acme", gw1)
	mustState(t, n, "acme", gw2, registry.StateRevoked)

	n.reg.Close()
	c.bb.Close()
	c.start()
	n = c.open()

	var ids []string
	for _, tt := range n.reg.Tenants() {
		ids = append(ids, tt.ID)
	}
	if !slices.Equal(ids, []string{"acme", "beta"}) {
		t.Fatalf("tenants after restart: %v", ids)
	}
	if got, _ := n.reg.Tenant("acme"); got.CACert != ten.CACert || !bytes.Equal(got.CAKey, ten.CAKey) {
		t.Fatal("tenant CA changed across the restart")
	}
	if g, ok := n.reg.Gateway("acme", gw1); !ok || g.State != registry.StateActive {
		t.Fatalf("gateway %s after restart: %+v", gw1, g)
	} else if _, ok := g.Certificate(old.rec.Serial); !ok {
		t.Fatal("certificate record lost across the restart")
	}
	if g, _ := n.reg.Gateway("acme", gw2); g.State != registry.StateRevoked {
		t.Fatalf("revoked gateway came back as %q", g.State)
	}
	if g, ok := n.reg.Gateway("beta", gw3); !ok || g.Tenant != "beta" {
		t.Fatal("beta's gateway lost")
	}
	// The sealed CA key opens and still signs for the same CA.
	is := mustIssue(t, n, "acme", gw1)
	caCert, _ := pki.ParseCertPEM([]byte(ten.CACert))
	if err := pki.VerifyClient(is.cert.Leaf, nil, caCert, time.Now()); err != nil {
		t.Fatalf("certificate issued after restart: %v", err)
	}
	// Serials stay reserved across the restart.
	if _, err := call(func(c context.Context) (registry.Gateway, error) { return n.reg.RegisterGateway(c, "beta", gw1) }); !registry.ErrGatewayExists.Is(err) {
		t.Fatalf("re-registering after restart: %v", err)
	}
	if _, err := call(func(c context.Context) (registry.Tenant, error) { return n.reg.CreateTenant(c, "acme") }); !registry.ErrTenantExists.Is(err) {
		t.Fatalf("re-creating a tenant after restart: %v", err)
	}
}

// A callback still busy with an older change (from the watch) must not let
// a newer change (written on this node) be reported before it finishes:
// consumers such as the session kicker act on the last state they are told.
func TestRegistryGatewayCallbacksReportInOrder(t *testing.T) {
	c := newCluster(t)
	a, b := c.open(), c.open()
	mustTenant(t, a, "acme")
	mustGateway(t, a, "acme", gw1)
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		if _, ok := b.reg.Gateway("acme", gw1); !ok {
			return errors.New("b does not see the gateway")
		}
		return nil
	})

	var (
		mu       sync.Mutex
		finished []registry.GatewayState // in the order callbacks returned
		entered  = make(chan struct{})
		release  = make(chan struct{})
		exited   = make(chan struct{})
		once     sync.Once
	)
	a.reg.OnGatewayChange(func(g registry.Gateway) {
		if g.Serial != gw1 {
			return
		}
		slow := false
		if g.State == registry.StateIsolated {
			once.Do(func() {
				slow = true
				close(entered)
				<-release // a slow consumer
			})
		}
		mu.Lock()
		finished = append(finished, g.State)
		mu.Unlock()
		if slow {
			close(exited)
		}
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})

	mustState(t, b, "acme", gw1, registry.StateIsolated) // reaches a through its watch
	select {
	case <-entered:
	case <-time.After(propagation * tu.Slowdown()):
		t.Fatal("a's callback did not see the isolation")
	}
	done := make(chan error, 1)
	go func() {
		_, err := call(func(c context.Context) (registry.Gateway, error) {
			return a.reg.SetGatewayState(c, "acme", gw1, registry.StateActive)
		})
		done <- err
	}()
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		if g, _ := a.reg.Gateway("acme", gw1); g.State != registry.StateActive {
			return errors.New("a's write has not reached its cache")
		}
		return nil
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-exited
	mu.Lock()
	defer mu.Unlock()
	if len(finished) == 0 || finished[len(finished)-1] != registry.StateActive {
		t.Fatalf("callbacks finished in the order %v: the last reported state is not the current one (active)", finished)
	}
}
