package api_test

import (
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
	"github.com/iotransit/iotransit/internal/credential"
)

// The operator lists and verifies the platform's audit log (_system); no
// tenant credential reaches it, and no other route takes _system.
func TestAPIOperatorReadsSystemAudit(t *testing.T) {
	w := newWorld(t) // creates tenants acme and beta: entries of _system
	const sys = "/v1/tenants/" + audit.SystemTenant

	var page client.Page[audit.Entry]
	if r := w.api.Do("GET", sys+"/audit?action=registry.tenant.create&order=oldest", w.api.Key(), nil); r.Status != 200 {
		t.Fatalf("operator lists _system: %d %s", r.Status, r.Body)
	} else {
		r.Decode(t, &page)
	}
	if len(page.Items) < 2 || page.Items[len(page.Items)-1].Target != "tenant:beta" || page.Items[0].Tenant != audit.SystemTenant {
		t.Fatalf("_system entries of tenant creation: %+v", page.Items)
	}
	var rep client.AuditReport
	if r := w.api.Do("GET", sys+"/audit/verify", w.api.Key(), nil); r.Status != 200 {
		t.Fatalf("operator verifies _system: %d %s", r.Status, r.Body)
	} else {
		r.Decode(t, &rep)
	}
	if !rep.OK || rep.Tenant != audit.SystemTenant || rep.Entries < 2 {
		t.Fatalf("_system report %+v", rep)
	}

	all := w.key("acme", credential.TenantScopes)
	for _, tc := range []struct {
		name, path, key string
	}{
		{"tenant key lists _system", sys + "/audit", all},
		{"tenant key verifies _system", sys + "/audit/verify", all},
		{"operator reads _system's gateways", sys + "/gateways", w.api.Key()},
		{"operator reads _system as a tenant", sys, w.api.Key()},
		{"operator names another reserved id", "/v1/tenants/_other/audit", w.api.Key()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := w.api.Do("GET", tc.path, tc.key, nil)
			if code, _ := r.Problem(); r.Status != 404 || code != "registry.tenant_not_found" {
				t.Fatalf("%d %s, want 404 registry.tenant_not_found", r.Status, r.Body)
			}
		})
	}
}
