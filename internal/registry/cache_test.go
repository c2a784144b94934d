package registry_test

import (
	"context"
	"testing"

	"github.com/iotransit/iotransit/internal/registry"
)

// TestRegistryGatewayDeploymentGroup reads a gateway's deployment group as
// Gateway does, without copying its record: the same answers for a set, a
// cleared and an unknown group, and no allocation per call (issue 11: the
// ingest reads it for every upload).
func TestRegistryGatewayDeploymentGroup(t *testing.T) {
	c := newCluster(t)
	n := c.open()
	mustTenant(t, n, "acme")
	mustGateway(t, n, "acme", gw1)
	mustGateway(t, n, "acme", gw2)
	mustIssue(t, n, "acme", gw1) // a record with a certificate
	if _, err := call(func(c context.Context) (registry.Gateway, error) {
		return n.reg.SetDeploymentGroup(c, "acme", gw1, "prfi00samplegroup")
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, tenant, serial string
		want                 string
		ok                   bool
	}{
		{name: "set", tenant: "acme", serial: gw1, want: "prfi00samplegroup", ok: true},
		{name: "none", tenant: "acme", serial: gw2, want: "", ok: true},
		{name: "unknown gateway", tenant: "acme", serial: gw3},
		{name: "unknown tenant", tenant: "beta", serial: gw1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := n.reg.GatewayDeploymentGroup(tc.tenant, tc.serial)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("GatewayDeploymentGroup = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
			g, gok := n.reg.Gateway(tc.tenant, tc.serial)
			if g.DeploymentGroupID != got || gok != ok {
				t.Fatalf("Gateway says %q, %v", g.DeploymentGroupID, gok)
			}
		})
	}
	if a := testing.AllocsPerRun(100, func() { n.reg.GatewayDeploymentGroup("acme", gw1) }); a != 0 {
		t.Errorf("GatewayDeploymentGroup: %v allocs per call, want 0", a)
	}
	if a := testing.AllocsPerRun(100, func() { n.reg.Gateway("acme", gw1) }); a == 0 {
		t.Errorf("Gateway copies the record, yet made no allocation: the comparison above proves nothing")
	} else {
		t.Logf("Gateway: %v allocs per call; GatewayDeploymentGroup: 0", a)
	}
	// A cleared group reads as none.
	if _, err := call(func(c context.Context) (registry.Gateway, error) {
		return n.reg.SetDeploymentGroup(c, "acme", gw1, "")
	}); err != nil {
		t.Fatal(err)
	}
	if got, ok := n.reg.GatewayDeploymentGroup("acme", gw1); got != "" || !ok {
		t.Fatalf("after clearing: %q, %v", got, ok)
	}
}
