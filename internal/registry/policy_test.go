package registry_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/fault"
	"github.com/iotransit/iotransit/internal/registry"
	tu "github.com/iotransit/iotransit/internal/testutil"
)

func ptr[T any](v T) *T { return &v }

func setPolicy(t *testing.T, n *node, tenant string, p client.Policy) (registry.Tenant, registry.Tenant) {
	t.Helper()
	var before registry.Tenant
	after, err := call(func(c context.Context) (registry.Tenant, error) {
		b, a, err := n.reg.SetPolicy(c, tenant, p)
		before = b
		return a, err
	})
	if err != nil {
		t.Fatalf("set policy of %s: %v", tenant, err)
	}
	return before, after
}

// A policy set on one node reaches another registry on the same buckets
// within a second, and a later one replaces it there too; the record keeps
// its switch for older nodes in step.
func TestRegistryPolicyReachesSecondNode(t *testing.T) {
	c := newCluster(t)
	a, b := c.open(), c.open()
	mustTenant(t, a, "acme")
	tu.Eventually(t, propagation, 5*time.Millisecond, func() error {
		if _, ok := b.reg.Tenant("acme"); !ok {
			return errors.New("b does not see the tenant")
		}
		return nil
	})
	for _, strict := range []bool{true, false} {
		start := time.Now()
		_, after := setPolicy(t, a, "acme", client.Policy{StrictValidation: ptr(strict), Quotas: &client.Quotas{Gateways: ptr(7)}})
		if after.RejectUnknownIDs != strict || after.StrictValidation() != strict {
			t.Fatalf("record after the change: rejectUnknownIds %v, strict %v; want %v", after.RejectUnknownIDs, after.StrictValidation(), strict)
		}
		tu.Eventually(t, time.Second, 5*time.Millisecond, func() error {
			got, _ := b.reg.Tenant("acme")
			if got.StrictValidation() != strict || got.Policy.Quotas == nil || *got.Policy.Quotas.Gateways != 7 {
				return fmt.Errorf("b sees strict %v, quotas %+v", got.StrictValidation(), got.Policy.Quotas)
			}
			return nil
		})
		t.Logf("policy reached the second registry in %s", time.Since(start))
	}
	// A registry opened later reads it with the tenant.
	late := c.open()
	if got, _ := late.reg.Tenant("acme"); got.Policy.Quotas == nil || *got.Policy.Quotas.Gateways != 7 {
		t.Fatalf("a registry opened later sees %+v", got.Policy)
	}
}

// A tenant record of before policies keeps its switch as the default of
// strictValidation.
func TestRegistryStrictValidationDefault(t *testing.T) {
	tests := []struct {
		name   string
		legacy bool
		policy *bool
		want   bool
	}{
		{name: "neither", want: false},
		{name: "legacy switch", legacy: true, want: true},
		{name: "policy on", policy: ptr(true), want: true},
		{name: "policy off over legacy", legacy: true, policy: ptr(false), want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ten := registry.Tenant{RejectUnknownIDs: tc.legacy, Policy: client.Policy{StrictValidation: tc.policy}}
			if got := ten.StrictValidation(); got != tc.want {
				t.Fatalf("StrictValidation = %v, want %v", got, tc.want)
			}
		})
	}
}

// The gateway quota refuses a registration (and a claim) past it, and
// accepts one at it.
func TestRegistryGatewayQuota(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	mustTenant(t, n, "other")
	setPolicy(t, n, "acme", client.Policy{Quotas: &client.Quotas{Gateways: ptr(2)}})
	mustGateway(t, n, "acme", gw1)
	mustGateway(t, n, "acme", gw2) // the second is at the quota: accepted
	_, err := call(func(cx context.Context) (registry.Gateway, error) { return n.reg.RegisterGateway(cx, "acme", gw3) })
	if !registry.ErrQuotaExceeded.Is(err) {
		t.Fatalf("a third gateway: %v, want policy.quota_exceeded", err)
	}
	_, err = call(func(cx context.Context) (registry.Gateway, error) { return n.reg.Claim(cx, "acme", gw3, "ABCD-EFGH") })
	if !registry.ErrQuotaExceeded.Is(err) {
		t.Fatalf("a claim past the quota: %v, want policy.quota_exceeded", err)
	}
	mustGateway(t, n, "other", gw3) // another tenant is not bound by it
	// Deleting one makes room.
	if _, err := call(func(cx context.Context) (struct{}, error) { return struct{}{}, n.reg.DeleteGateway(cx, "acme", gw1) }); err != nil {
		t.Fatal(err)
	}
	mustGateway(t, n, "acme", gw1)
}

// Certificates are issued for the policy's certificate validity when it is
// shorter than the node's, and for the node's otherwise.
func TestRegistryPolicyCertificateValidity(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	mustGateway(t, n, "acme", gw1)
	for _, tc := range []struct {
		name   string
		policy *client.Duration
		want   time.Duration
	}{
		{name: "node default", want: 24 * time.Hour}, // issue asks for 24h
		{name: "shorter", policy: ptr(client.Duration(2 * time.Hour)), want: 2 * time.Hour},
		{name: "longer than the node's", policy: ptr(client.Duration(48 * time.Hour)), want: 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setPolicy(t, n, "acme", client.Policy{CertificateValidity: tc.policy})
			is := mustIssue(t, n, "acme", gw1)
			got := is.cert.Leaf.NotAfter.Sub(is.cert.Leaf.NotBefore)
			// pki backdates NotBefore a little against clock skew.
			if got < tc.want || got > tc.want+10*time.Minute {
				t.Fatalf("lifetime %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRegistryValidatePolicy(t *testing.T) {
	lim := registry.PolicyLimits{MaxCertificateValidity: 365 * 24 * time.Hour, AuditRetention: 400 * 24 * time.Hour}
	tests := []struct {
		name  string
		p     client.Policy
		field string // "" valid
	}{
		{name: "empty", p: client.Policy{}},
		{name: "rate zero", p: client.Policy{Quotas: &client.Quotas{IngestMsgsPerSecond: ptr(0.0)}}, field: "quotas.ingestMsgsPerSecond"},
		{name: "rate", p: client.Policy{Quotas: &client.Quotas{IngestMsgsPerSecond: ptr(0.5), IngestBurst: ptr(1)}}},
		{name: "burst zero", p: client.Policy{Quotas: &client.Quotas{IngestBurst: ptr(0)}}, field: "quotas.ingestBurst"},
		{name: "negative gateways", p: client.Policy{Quotas: &client.Quotas{Gateways: ptr(-1)}}, field: "quotas.gateways"},
		{name: "zero integrations", p: client.Policy{Quotas: &client.Quotas{Integrations: ptr(0)}}},
		{name: "unknown type", p: client.Policy{Integrations: &client.IntegrationPolicy{AllowedTypes: []string{"ftp"}}}, field: "integrations.allowedTypes"},
		{name: "host with scheme", p: client.Policy{Integrations: &client.IntegrationPolicy{AllowedHosts: []string{"https://a.example.com"}}}, field: "integrations.allowedHosts"},
		{name: "host with port", p: client.Policy{Integrations: &client.IntegrationPolicy{AllowedHosts: []string{"a.example.com:443"}}}, field: "integrations.allowedHosts"},
		{name: "inner wildcard", p: client.Policy{Integrations: &client.IntegrationPolicy{AllowedHosts: []string{"a.*.example.com"}}}, field: "integrations.allowedHosts"},
		{name: "hosts", p: client.Policy{Integrations: &client.IntegrationPolicy{AllowedHosts: []string{"*.example.com", "hooks.example.org", "192.0.2.1"}}}},
		{name: "validity at the node's", p: client.Policy{CertificateValidity: ptr(client.Duration(lim.MaxCertificateValidity))}},
		{name: "validity past the node's", p: client.Policy{CertificateValidity: ptr(client.Duration(lim.MaxCertificateValidity + time.Second))}, field: "certificateValidity"},
		{name: "retention too short", p: client.Policy{Retention: &client.Retention{MessagesMaxAge: ptr(client.Duration(time.Hour - time.Second))}}, field: "retention.messagesMaxAge"},
		{name: "retention at its least", p: client.Policy{Retention: &client.Retention{MessagesMaxAge: ptr(client.Duration(time.Hour)), MessagesMaxBytes: ptr(int64(1 << 20))}}},
		{name: "retention bytes too few", p: client.Policy{Retention: &client.Retention{MessagesMaxBytes: ptr(int64(1<<20 - 1))}}, field: "retention.messagesMaxBytes"},
		{name: "networks", p: client.Policy{APIAllowCIDRs: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"}}},
		{name: "network without a length", p: client.Policy{APIAllowCIDRs: []string{"10.0.0.0"}}, field: "apiAllowCIDRs"},
		{name: "network with host bits", p: client.Policy{APIAllowCIDRs: []string{"2001:db8::1/32"}}, field: "apiAllowCIDRs"},
		{name: "too many networks", p: client.Policy{APIAllowCIDRs: make([]string, registry.MaxAllowCIDRs+1)}, field: "apiAllowCIDRs"},
		{name: "stored bytes at its least", p: client.Policy{Quotas: &client.Quotas{StoredBytes: ptr(int64(1 << 20))}}},
		{name: "stored bytes too few", p: client.Policy{Quotas: &client.Quotas{StoredBytes: ptr(int64(1<<20 - 1))}}, field: "quotas.storedBytes"},
		{name: "stored bytes with retention bytes", p: client.Policy{Quotas: &client.Quotas{StoredBytes: ptr(int64(1 << 30))}, Retention: &client.Retention{MessagesMaxBytes: ptr(int64(1 << 30))}}, field: "quotas.storedBytes"},
		{name: "rejected at its least", p: client.Policy{Retention: &client.Retention{RejectedMaxAge: ptr(client.Duration(time.Hour)), DeadLettersMaxAge: ptr(client.Duration(time.Hour))}}},
		{name: "rejected too short", p: client.Policy{Retention: &client.Retention{RejectedMaxAge: ptr(client.Duration(time.Hour - 1))}}, field: "retention.rejectedMaxAge"},
		{name: "dead letters too short", p: client.Policy{Retention: &client.Retention{DeadLettersMaxAge: ptr(client.Duration(time.Minute))}}, field: "retention.deadLettersMaxAge"},
		{name: "audit at the platform's", p: client.Policy{Retention: &client.Retention{AuditMinAge: ptr(client.Duration(lim.AuditRetention))}}},
		{name: "audit below the platform's", p: client.Policy{Retention: &client.Retention{AuditMinAge: ptr(client.Duration(lim.AuditRetention - time.Second))}}, field: "retention.auditMinAge"},
		{name: "key lifetime too short", p: client.Policy{APIKeyMaxLifetime: ptr(client.Duration(time.Second))}, field: "apiKeyMaxLifetime"},
	}
	forever := registry.PolicyLimits{MaxCertificateValidity: lim.MaxCertificateValidity}
	if err := registry.ValidatePolicy(client.Policy{Retention: &client.Retention{AuditMinAge: ptr(client.Duration(100 * 365 * 24 * time.Hour))}}, forever); !registry.ErrPolicyInvalid.Is(err) {
		t.Errorf("an audit age on a node that keeps audit for ever: %v, want policy.invalid", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := registry.ValidatePolicy(tc.p, lim)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !registry.ErrPolicyInvalid.Is(err) {
				t.Fatalf("got %v, want policy.invalid", err)
			}
			if d := errorDetail(err); len(d) < len(tc.field) || d[:len(tc.field)] != tc.field {
				t.Fatalf("detail %q does not name %s", d, tc.field)
			}
		})
	}
}

func TestRegistryHostAllowed(t *testing.T) {
	patterns := []string{"*.example.com", "hooks.example.org", "2001:db8::10", "192.0.2.7"}
	tests := []struct {
		name string
		host string
		want bool
	}{
		{name: "subdomain", host: "a.example.com", want: true},
		{name: "deeper", host: "a.b.example.com", want: true},
		{name: "case", host: "A.Example.COM.", want: true},
		{name: "apex not under wildcard", host: "example.com"},
		{name: "suffix trick", host: "evilexample.com"},
		{name: "exact", host: "hooks.example.org", want: true},
		{name: "exact's subdomain", host: "x.hooks.example.org"},
		// An IPv6 literal's zone is not a name: "[2001:db8::1%25.example.com]"
		// dials 2001:db8::1.
		{name: "zone under wildcard", host: "2001:db8::1%.example.com"},
		{name: "zone of an allowed address", host: "2001:db8::10%eth0"},
		{name: "address under a wildcard of numbers", host: "198.51.100.7", want: false},
		{name: "address in another form", host: "2001:DB8:0::10", want: true},
		{name: "IPv4-mapped address", host: "::ffff:192.0.2.7", want: true},
		{name: "other address", host: "192.0.2.8"},
		{name: "not a host name", host: "a%2f.example.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := registry.HostAllowed(patterns, tc.host); got != tc.want {
				t.Fatalf("HostAllowed(%q) = %v", tc.host, got)
			}
		})
	}
}

func errorDetail(err error) string { return fault.From(err).Detail() }

// strictValidation left out of a policy takes the record's own switch of
// before policies, not the value a former policy set: a tenant made
// strict by one policy is lenient again when a later policy leaves the
// member out.
func TestRegistryStrictValidationDefaultSurvivesPolicies(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	if _, err := n.reg.CreateTenant(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.reg.SetPolicy(t.Context(), "acme", client.Policy{StrictValidation: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	_, after, err := n.reg.SetPolicy(t.Context(), "acme", client.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if after.StrictValidation() || after.RejectUnknownIDs {
		t.Fatalf("after the policy left strictValidation out: strict %v, rejectUnknownIds %v; want the record's own false", after.StrictValidation(), after.RejectUnknownIDs)
	}
	if got, _ := n.reg.Tenant("acme"); got.StrictValidation() {
		t.Fatal("the registry's copy is still strict")
	}
}

// SourceAllowed: an address inside one of apiAllowCIDRs, IPv4 or IPv6 (an
// IPv4-mapped IPv6 address as its IPv4 one), is allowed, one just outside
// is not, and no list allows everything.
func TestRegistrySourceAllowed(t *testing.T) {
	tenant := func(cidrs ...string) registry.Tenant {
		return registry.Tenant{Policy: client.Policy{APIAllowCIDRs: cidrs}}
	}
	for _, tc := range []struct {
		name  string
		t     registry.Tenant
		addr  string
		allow bool
	}{
		{name: "no list", t: tenant(), addr: "203.0.113.9", allow: true},
		{name: "inside v4", t: tenant("10.0.0.0/8", "2001:db8::/32"), addr: "10.255.255.255", allow: true},
		{name: "just outside v4", t: tenant("10.0.0.0/8", "2001:db8::/32"), addr: "11.0.0.0"},
		{name: "inside v6", t: tenant("10.0.0.0/8", "2001:db8::/32"), addr: "2001:db8:ffff::1", allow: true},
		{name: "just outside v6", t: tenant("10.0.0.0/8", "2001:db8::/32"), addr: "2001:db9::"},
		{name: "v4-mapped inside", t: tenant("10.0.0.0/8"), addr: "::ffff:10.1.2.3", allow: true},
		{name: "v4-mapped outside", t: tenant("10.0.0.0/8"), addr: "::ffff:192.0.2.1"},
		{name: "v6 with zone", t: tenant("fe80::/10"), addr: "fe80::1%eth0", allow: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.t.SourceAllowed(netip.MustParseAddr(tc.addr)); got != tc.allow {
				t.Fatalf("SourceAllowed(%s) = %v, want %v", tc.addr, got, tc.allow)
			}
		})
	}
}
