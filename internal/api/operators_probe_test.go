package api_test

import (
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestOperatorRoleRefusalDoesNotTellTenantsApart: a named operator on a
// tenant route outside its role is refused 403 api.operator_role whether
// the tenant exists or not (it answered 404 for an unknown tenant, so an
// operator:metrics key could list the tenants it may not read).
func TestOperatorRoleRefusalDoesNotTellTenantsApart(t *testing.T) {
	n := nodetest.Start(t, nil)
	boot := nodetest.NewAPI(t, n)
	metrics := createOperator(t, boot.Client, "probe", client.RoleMetrics)
	tests := []struct{ name, tenant string }{
		{"existing tenant", node.DevTenant},
		{"unknown tenant", "no-such-tenant"},
		{"invalid tenant", "_system"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := boot.Do("GET", "/v1/tenants/"+tc.tenant+"/gateways", metrics.Key, nil)
			if code, _ := r.Problem(); r.Status != 403 || code != "api.operator_role" {
				t.Errorf("operator:metrics on the gateways of %s: %d %s, want 403 api.operator_role", tc.tenant, r.Status, r.Body)
			}
		})
	}
}
