package main

import (
	"testing"

	"github.com/iotransit/iotransit/client"
)

// TestAdminTenantDelete: "tenant delete" refuses without --confirm or with
// another id, deletes with it (a tombstone row), and "tenant list
// --deleted" shows the tenant, which "tenant list" no longer does.
func TestAdminTenantDelete(t *testing.T) {
	a := startAdminNode(t)
	a.mustOp(t, "tenant", "create", "gone")
	if _, _, err := a.op(t, "tenant", "delete", "--tenant", "gone"); err == nil {
		t.Fatal("tenant delete without --confirm deleted")
	}
	_, _, err := a.op(t, "tenant", "delete", "--tenant", "gone", "--confirm", "dev")
	wantProblem(t, err, "api.tenant_delete_unconfirmed")
	out := a.mustOp(t, "tenant", "delete", "--tenant", "gone", "--confirm", "gone")
	wantLines(t, out, "ID", "STATE", "DELETED-BY")
	if row := tableRow(t, out, "gone"); row[1] != client.TenantDeleted || row[2] != "operator" {
		t.Fatalf("delete row %q", row)
	}
	if row := tableRow(t, a.mustOp(t, "tenant", "list", "--deleted"), "gone"); row[1] != client.TenantDeleted {
		t.Fatalf("list --deleted row %q", row)
	}
	var live client.List[client.Tenant]
	a.mustJSON(t, &live, "tenant", "list")
	for _, tn := range live.Items {
		if tn.ID == "gone" {
			t.Fatal("tenant list shows the deleted tenant")
		}
	}
	_, _, err = a.op(t, "tenant", "create", "gone")
	wantProblem(t, err, "registry.tenant_deleted")
}
