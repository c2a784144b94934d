package registry_test

import (
	"net/netip"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/registry"
)

// TestRegistrySourceAllowedMappedNetworks: a network of apiAllowCIDRs
// written as IPv4-mapped IPv6 (as a dual-stack log shows an IPv4 peer)
// holds the IPv4 addresses it maps, whichever way the peer is written; it
// holds nothing else.
func TestRegistrySourceAllowedMappedNetworks(t *testing.T) {
	tenant := registry.Tenant{Policy: client.Policy{APIAllowCIDRs: []string{"::ffff:192.0.2.0/120"}}}
	if err := registry.ValidatePolicy(tenant.Policy, registry.PolicyLimits{}); err != nil {
		t.Fatalf("the policy is refused: %v", err)
	}
	for _, tc := range []struct {
		name  string
		addr  string
		allow bool
	}{
		{name: "v4 inside", addr: "192.0.2.7", allow: true},
		{name: "v4-mapped inside", addr: "::ffff:192.0.2.7", allow: true},
		{name: "v4 outside", addr: "192.0.3.7"},
		{name: "v6 outside", addr: "2001:db8::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tenant.SourceAllowed(netip.MustParseAddr(tc.addr)); got != tc.allow {
				t.Fatalf("SourceAllowed(%s) = %v, want %v", tc.addr, got, tc.allow)
			}
		})
	}
}
