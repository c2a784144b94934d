package registry_test

import (
	"context"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/registry"
)

// A revoked enrollment token enrolls nothing; revoking is idempotent, and a
// token of another tenant, an unknown or a malformed id is not found.
func TestRegistryRevokeEnrollmentToken(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	ctx := context.Background()
	mustTenant(t, n, "acme")
	mustTenant(t, n, "other")
	mustGateway(t, n, "acme", gw1)
	tok, secret, err := n.reg.CreateEnrollmentToken(ctx, "acme", gw1, 0, "test")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, tenant, id string
		want             *fault.Definition
	}{
		{"unknown id", "acme", "0123456789abcdef", registry.ErrTokenNotFound},
		{"malformed id", "acme", "../" + tok.ID, registry.ErrTokenNotFound},
		{"wildcard id", "acme", "*", registry.ErrTokenNotFound},
		{"another tenant's token", "other", tok.ID, registry.ErrTokenNotFound},
		{"unknown tenant", "nobody", tok.ID, registry.ErrTenantNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := n.reg.RevokeEnrollmentToken(ctx, tc.tenant, tc.id); !tc.want.Is(err) {
				t.Fatalf("revoke: %v, want %s", err, tc.want.Code())
			}
		})
	}
	// The refused revocations left the token working.
	if _, err := enroll(t, n, secret, gw1); err != nil {
		t.Fatalf("a token nobody revoked is refused: %v", err)
	}

	fresh, secret2, err := n.reg.CreateEnrollmentToken(ctx, "acme", gw1, 0, "test")
	if err != nil {
		t.Fatal(err)
	}
	rv, err := n.reg.RevokeEnrollmentToken(ctx, "acme", fresh.ID)
	if err != nil || rv.RevokedAt == nil || rv.ID != fresh.ID || rv.Hash != nil || rv.GatewayIncarnation != "" {
		t.Fatalf("revoke: %+v, %v", rv, err)
	}
	again, err := n.reg.RevokeEnrollmentToken(ctx, "acme", fresh.ID)
	if err != nil || again.RevokedAt == nil || !again.RevokedAt.Equal(*rv.RevokedAt) {
		t.Fatalf("revoking again changed the token: %+v, %v (first %v)", again, err, rv.RevokedAt)
	}
	if _, err := enroll(t, n, secret2, gw1); !registry.ErrTokenRevoked.Is(err) {
		t.Fatalf("enroll with a revoked token: %v, want %s", err, registry.ErrTokenRevoked.Code())
	}
	// A used token can be revoked too; it stays refused.
	used, err := n.reg.RevokeEnrollmentToken(ctx, "acme", tok.ID)
	if err != nil || used.UsedAt == nil || used.RevokedAt == nil {
		t.Fatalf("revoke a used token: %+v, %v", used, err)
	}
	toks, err := n.reg.EnrollmentTokens(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.RevokedAt == nil {
			t.Errorf("listed token %s is not revoked: %+v", tk.ID, tk)
		}
	}
	if g, _ := n.reg.Gateway("acme", gw1); len(g.Certificates) != 1 {
		t.Fatalf("certificates after one good enrollment and a revoked token: %d", len(g.Certificates))
	}
}

// Every refusal of a token says what to do: make a new one, and how.
func TestRegistryTokenRefusalsSayWhatToDo(t *testing.T) {
	for _, tc := range []struct {
		name string
		def  *fault.Definition
	}{
		{"invalid", registry.ErrTokenInvalid},
		{"used", registry.ErrTokenUsed},
		{"expired", registry.ErrTokenExpired},
		{"revoked", registry.ErrTokenRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if msg := tc.def.Message(); !strings.Contains(msg, "iotransit token create SERIAL") || !strings.Contains(msg, "/enrollment-tokens") {
				t.Errorf("%s: %q does not say how to make a new token", tc.def.Code(), msg)
			}
		})
	}
}
