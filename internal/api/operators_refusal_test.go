package api_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestOperatorRefusalNamesOperator: a wrong secret with an existing
// operator's id is audited in _system under that operator's name, and the
// entry holds no part of the secret tried.
func TestOperatorRefusalNamesOperator(t *testing.T) {
	n := nodetest.Start(t, nil)
	ctx := t.Context()
	boot := operatorClient(t, n, n.APIAddr(), n.OperatorKey())
	op := createOperator(t, boot, "carol", client.RoleReadonly)
	secret := strings.Repeat("Q", 43)
	wrong := operatorClient(t, n, n.APIAddr(), "ito_"+op.ID+"_"+secret)
	if _, err := wrong.ListTenants(ctx); problemCode(err) != "api.unauthenticated" {
		t.Fatalf("a wrong secret: %v", err)
	}
	page, err := boot.ListAudit(ctx, "_system", client.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var found *client.AuditEntry
	for i, e := range page.Items {
		if e.Action == "api.auth.refuse" && e.Target == "route:GET /v1/tenants" {
			found = &page.Items[i]
		}
	}
	if found == nil {
		t.Fatalf("no refusal in _system: %+v", page.Items)
	}
	if found.Actor != "operator:carol" {
		t.Errorf("refusal actor %q, want operator:carol", found.Actor)
	}
	if all := fmt.Sprintf("%+v", *found); strings.Contains(all, secret[:8]) {
		t.Errorf("the refusal holds the secret: %s", all)
	}
}
