package main

import (
	"strings"
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/node"
)

// TestAdminKMSReencrypt: "kms reencrypt --wait" after a rotation shows the
// job's progress on stderr and ends with it done, every record kind
// finished; "kms status" then shows the job, in a table and as JSON.
func TestAdminKMSReencrypt(t *testing.T) {
	a := startAdminNode(t)
	a.mustOp(t, "kms", "rotate", "--tenant", node.DevTenant)
	out, errOut, err := a.op(t, "kms", "reencrypt", "--tenant", node.DevTenant, "--wait")
	if err != nil {
		t.Fatalf("kms reencrypt: %v\nstderr: %s", err, errOut)
	}
	if !strings.Contains(errOut, "running") {
		t.Errorf("no progress on stderr: %q", errOut)
	}
	if !strings.HasPrefix(out, "re-encryption done: pass 1 to version 2") {
		t.Fatalf("kms reencrypt --wait:\n%s", out)
	}
	if row := tableRow(t, out, "records"); row[5] != "yes" {
		t.Errorf("records row %v, want finished", row)
	}
	out = a.mustOp(t, "kms", "status", "--tenant", node.DevTenant)
	if !strings.Contains(out, "re-encryption done") {
		t.Errorf("kms status does not show the job:\n%s", out)
	}
	var st client.KMSStatus
	a.mustJSON(t, &st, "kms", "status", "--tenant", node.DevTenant)
	j := st.Reencryption
	if j == nil || j.State != client.ReencryptDone || j.TargetVersion != 2 || len(j.Records) == 0 {
		t.Fatalf("status: %+v", j)
	}
	for _, r := range j.Records {
		if !r.Finished || r.Done != r.Total {
			t.Errorf("records %+v", r)
		}
	}
	_, _, err = a.op(t, "kms", "reencrypt", "--tenant", "nobody")
	wantProblem(t, err, "registry.tenant_not_found")
}
