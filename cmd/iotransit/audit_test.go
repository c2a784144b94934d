package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/audit"
)

// The operator lists and verifies the platform's audit log with --tenant
// _system, as the README says; a tenant's key is refused, with a hint.
func TestAdminAuditSystemLog(t *testing.T) {
	a := startAdminNode(t)
	a.mustOp(t, "tenant", "create", "sysaudit")

	out := a.mustOp(t, "audit", "verify", "--tenant", audit.SystemTenant)
	wantLines(t, out, "OK: the audit log of tenant _system verifies", "entries:")

	out = a.mustOp(t, "audit", "list", "--tenant", audit.SystemTenant, "--action", "registry.tenant.create")
	if row := tableRow(t, out, "SEQ"); strings.Join(row, " ") != "SEQ TIME ACTOR ACTION TARGET OUTCOME" {
		t.Fatalf("audit header %q", row)
	}
	wantLines(t, out, "tenant:sysaudit")
	var rep client.AuditReport
	a.mustJSON(t, &rep, "audit", "verify", "--tenant", audit.SystemTenant)
	if !rep.OK || rep.Tenant != audit.SystemTenant || rep.Entries == 0 {
		t.Fatalf("audit verify --tenant _system -o json: %+v", rep)
	}

	var key client.APIKey
	a.mustJSON(t, &key, "apikey", "create", "--tenant", "sysaudit", "--scope", "audit:read")
	for _, cmd := range []string{"list", "verify"} {
		_, _, err := a.cli(t, "audit", cmd, "--tenant", audit.SystemTenant, "--server", a.server, "--ca", a.caFile, "--key", key.Key)
		wantProblemHinted(t, err, "registry.tenant_not_found", "only the operator key reads it")
	}
	// The key reads its own tenant's log.
	if _, _, err := a.cli(t, "audit", "verify", "--tenant", "sysaudit", "--server", a.server, "--ca", a.caFile, "--key", key.Key); err != nil {
		t.Fatalf("the key verifies its own tenant's log: %v", err)
	}
}

// wantProblemHinted checks err is a refusal with code followed by a hint.
func wantProblemHinted(t *testing.T, err error, code, hint string) {
	t.Helper()
	var pe *client.Problem
	if !errors.As(err, &pe) || pe.Code != code || !strings.HasSuffix(err.Error(), hint+")") {
		t.Fatalf("error %v: want %s with the hint %q", err, code, hint)
	}
}
