package registry_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
)

func mustToken(t *testing.T, n *node, tenant, serial string) string {
	t.Helper()
	_, tok, err := n.reg.CreateEnrollmentToken(context.Background(), tenant, serial, 0, "test")
	if err != nil {
		t.Fatalf("token for %s: %v", serial, err)
	}
	return tok
}

func enroll(t *testing.T, n *node, tok, serial string) (registry.Enrollment, error) {
	t.Helper()
	csr, _ := csrFor(t, serial)
	return call(func(c context.Context) (registry.Enrollment, error) { return n.reg.Enroll(c, tok, csr, time.Hour, nil) })
}

// A token is bound to the gateway it was made for, not only to its serial:
// after deletion (and registration again) it is refused as an unknown token.
func TestRegistryTokenBoundToGatewayIncarnation(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	first := mustGateway(t, n, "acme", gw1)
	if first.Incarnation == "" {
		t.Fatal("a registered gateway has no incarnation")
	}
	old := mustToken(t, n, "acme", gw1)
	unused := mustToken(t, n, "acme", gw1)
	if err := n.reg.DeleteGateway(context.Background(), "acme", gw1); err != nil {
		t.Fatal(err)
	}
	if _, err := enroll(t, n, old, gw1); !registry.ErrTokenInvalid.Is(err) {
		t.Fatalf("token of a deleted gateway: %v, want token_invalid", err)
	}
	again := mustGateway(t, n, "acme", gw1)
	if again.Incarnation == first.Incarnation {
		t.Fatal("registering again kept the incarnation")
	}
	for _, tok := range []string{old, unused} {
		if e, err := enroll(t, n, tok, gw1); !registry.ErrTokenInvalid.Is(err) {
			t.Fatalf("token of the deleted gateway enrolled its replacement: %+v, %v", e, err)
		}
	}
	if g, _ := n.reg.Gateway("acme", gw1); len(g.Certificates) != 0 {
		t.Fatalf("a refused token recorded a certificate: %+v", g.Certificates)
	}
	if _, err := enroll(t, n, mustToken(t, n, "acme", gw1), gw1); err != nil {
		t.Fatalf("token made for the new gateway: %v", err)
	}
	// A revoked gateway's token stays refused, before and after re-registration.
	mustGateway(t, n, "acme", gw2)
	rt := mustToken(t, n, "acme", gw2)
	mustState(t, n, "acme", gw2, registry.StateRevoked)
	if _, err := enroll(t, n, rt, gw2); err == nil {
		t.Fatal("a revoked gateway enrolled")
	}
	// Tokens as listed do not carry the binding.
	toks, err := n.reg.EnrollmentTokens(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.GatewayIncarnation != "" || tk.Hash != nil {
			t.Fatalf("listed token carries stored-only fields: %+v", tk)
		}
	}
}

func authenticate(n *node, is issued) error {
	_, err := n.reg.Authenticate([]*x509.Certificate{is.cert.Leaf}, time.Now())
	return err
}

// Issuing keeps the newest two certificates valid, revokes the older ones
// as superseded (refused like revoked ones), and bounds the record.
func TestRegistryCertificatesBounded(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	mustGateway(t, n, "acme", gw1)
	var all []issued
	for range 15 {
		all = append(all, mustIssue(t, n, "acme", gw1))
	}
	for i, is := range all {
		err := authenticate(n, is)
		if i >= len(all)-registry.MaxValidCertificates {
			if err != nil {
				t.Errorf("certificate %d (of the newest two) refused: %v", i, err)
			}
			continue
		}
		var re *registry.RefusedError
		if !errors.As(err, &re) || re.Reason != registry.ReasonCertRevoked && re.Reason != registry.ReasonCertUnknown {
			t.Errorf("superseded certificate %d: %v", i, err)
		}
	}
	g, _ := n.reg.Gateway("acme", gw1)
	if len(g.Certificates) > 12 {
		t.Fatalf("%d certificate records kept", len(g.Certificates))
	}
	valid := 0
	for _, rec := range g.Certificates {
		switch {
		case rec.RevokedAt == nil:
			valid++
		case rec.RevocationReason != registry.RevocationSuperseded:
			t.Errorf("certificate %s revoked as %q", rec.Serial, rec.RevocationReason)
		}
	}
	if valid != registry.MaxValidCertificates {
		t.Errorf("%d valid certificate records", valid)
	}
	// The third newest is still recorded, refused as revoked.
	var re *registry.RefusedError
	if err := authenticate(n, all[len(all)-3]); !errors.As(err, &re) || re.Reason != registry.ReasonCertRevoked {
		t.Errorf("third newest certificate: %v, want cert_revoked", err)
	}
	g = mustState(t, n, "acme", gw1, registry.StateRevoked)
	for _, rec := range g.Certificates {
		if rec.RevokedAt == nil {
			t.Errorf("certificate %s not revoked with its gateway", rec.Serial)
		}
	}
	if err := authenticate(n, all[len(all)-1]); err == nil {
		t.Error("newest certificate authenticates after revocation")
	}
}

// Renewal is limited to RenewalBurst certificates per RenewalWindow.
func TestRegistryRenewalRateLimited(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	mustGateway(t, n, "acme", gw1)
	cur := mustIssue(t, n, "acme", gw1)
	renew := func() (registry.Enrollment, error) {
		id, err := n.reg.Authenticate([]*x509.Certificate{cur.cert.Leaf}, time.Now())
		if err != nil {
			t.Fatalf("authenticate: %v", err)
		}
		csr, _ := csrFor(t, gw1)
		return call(func(c context.Context) (registry.Enrollment, error) { return n.reg.Reenroll(c, id, csr, time.Hour) })
	}
	for i := 1; i < registry.RenewalBurst; i++ {
		e, err := renew()
		if err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
		leaf, err := pki.ParseCertPEM(e.Chain)
		if err != nil {
			t.Fatal(err)
		}
		cur.cert.Leaf = leaf
	}
	if _, err := renew(); !registry.ErrRenewalRateLimited.Is(err) {
		t.Fatalf("renewal past the limit: %v", err)
	}
}
