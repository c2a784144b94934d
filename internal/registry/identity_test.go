package registry_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/iotransit/iotransit/internal/pki"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

// TestRegistryAuthenticateAttributesOnlyVerifiedChains: a refusal names a
// tenant and a serial only once the chain verified against that tenant's
// CA. A certificate that copies tenant beta's issuer and key id (public:
// they are in every enrollment answer) but is signed by another key is an
// unauthenticated refusal, whatever its validity period; a genuinely
// expired certificate of beta's CA is beta's.
func TestRegistryAuthenticateAttributesOnlyVerifiedChains(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	beta := mustTenant(t, n, "beta")
	mustGateway(t, n, "beta", gw1)
	betaCA, err := pki.ParseCertPEM([]byte(beta.CACert))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	genuine := mustIssue(t, n, "beta", gw1).cert.Leaf
	tests := []struct {
		name       string
		leaf       *x509.Certificate
		at         time.Time
		wantReason string
		wantTenant string
	}{
		{name: "forged, expired", leaf: tu.Forged(t, betaCA, gw1, now.Add(-48*time.Hour), now.Add(-24*time.Hour)).Leaf, at: now, wantReason: registry.ReasonUnknownCA},
		{name: "forged, not yet valid", leaf: tu.Forged(t, betaCA, gw1, now.Add(time.Hour), now.Add(48*time.Hour)).Leaf, at: now, wantReason: registry.ReasonUnknownCA},
		{name: "forged, current", leaf: tu.Forged(t, betaCA, gw1, now.Add(-time.Hour), now.Add(time.Hour)).Leaf, at: now, wantReason: registry.ReasonUnknownCA},
		{name: "genuine, expired", leaf: genuine, at: genuine.NotAfter.Add(time.Minute), wantReason: registry.ReasonExpired, wantTenant: "beta"},
		{name: "genuine, not yet valid", leaf: genuine, at: genuine.NotBefore.Add(-time.Minute), wantReason: registry.ReasonNotYetValid, wantTenant: "beta"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.reg.Authenticate([]*x509.Certificate{tc.leaf}, tc.at)
			var re *registry.RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("Authenticate: %v, want a refusal", err)
			}
			if re.Reason != tc.wantReason || re.Tenant != tc.wantTenant {
				t.Fatalf("refused %q for tenant %q (serial %q), want %q for tenant %q", re.Reason, re.Tenant, re.Serial, tc.wantReason, tc.wantTenant)
			}
			if tc.wantTenant == "" && re.Serial != "" {
				t.Errorf("an unauthenticated refusal names serial %q", re.Serial)
			}
		})
	}
}
