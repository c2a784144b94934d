package main

import (
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
)

// TestAdminCARotateRetireAndStatus: "ca rotate" makes version 2 of the dev
// tenant's CA with the overlap asked for, "ca retire" ends it, and "ca
// status" shows both versions, in a table and as JSON.
func TestAdminCARotateRetireAndStatus(t *testing.T) {
	a := startAdminNode(t)
	out := a.mustOp(t, "ca", "status", "--tenant", node.DevTenant)
	if row := tableRow(t, out, "1"); row[1] != client.KeyCurrent {
		t.Fatalf("status before rotation:\n%s", out)
	}
	out = a.mustOp(t, "ca", "rotate", "--tenant", node.DevTenant, "--overlap", "2h")
	if tableRow(t, out, "2")[1] != client.KeyCurrent || tableRow(t, out, "1")[1] != client.KeyOverlap {
		t.Fatalf("rotate:\n%s", out)
	}
	out = a.mustOp(t, "ca", "retire", "--tenant", node.DevTenant, "--version", "1")
	if tableRow(t, out, "1")[1] != client.KeyRetired {
		t.Fatalf("retire:\n%s", out)
	}
	var st client.TenantCA
	a.mustJSON(t, &st, "ca", "status", "--tenant", node.DevTenant)
	if st.CurrentVersion != 2 || len(st.Versions) != 2 || st.Versions[1].TrustedUntil == nil {
		t.Fatalf("status: %+v", st)
	}
	_, _, err := a.op(t, "ca", "retire", "--tenant", node.DevTenant, "--version", "2")
	wantProblem(t, err, "registry.ca_current")
}

// TestAdminPlatformKeysRotate: "keys rotate-jwt" and "keys rotate-audit"
// each add a current key and retire the previous; "keys list" shows them.
func TestAdminPlatformKeysRotate(t *testing.T) {
	a := startAdminNode(t)
	a.mustOp(t, "keys", "rotate-jwt")
	a.mustOp(t, "keys", "rotate-audit")
	var ks client.PlatformKeys
	a.mustJSON(t, &ks, "keys", "list")
	for name, list := range map[string][]client.PlatformKey{"jwt": ks.JWT, "audit": ks.Audit} {
		if len(list) != 2 || list[0].State != client.KeyRetired || list[1].State != client.KeyCurrent || list[0].ID == list[1].ID {
			t.Errorf("%s keys: %+v", name, list)
		}
	}
	if out := a.mustOp(t, "keys", "list"); tableRow(t, out, "jwt")[2] != ks.JWT[0].ID {
		t.Errorf("table:\n%s", out)
	}
}
