package main

import (
	"testing"

	"github.com/iotransit/iotransit/client"
	"github.com/iotransit/iotransit/internal/backbone/names"
	tu "github.com/iotransit/iotransit/internal/testutil"
	"github.com/iotransit/iotransit/internal/testutil/nodetest"
)

// TestAdminAuditVerifiesAfterRefusedChangesAndReads: while a tenant's
// audit log refuses writes, `apikey create` fails with audit.unavailable
// and makes no key; once it is healthy the key is made, its reads of
// messages are audited (data.read), and `audit verify` says OK.
func TestAdminAuditVerifiesAfterRefusedChangesAndReads(t *testing.T) {
	a := startAdminNode(t)
	a.mustOp(t, "tenant", "create", "lossless")
	api := nodetest.NewAPI(t, a.n)
	keys := func() int {
		t.Helper()
		var p client.Page[client.APIKey]
		api.Do("GET", "/v1/tenants/lossless/api-keys", api.Key(), nil).Decode(t, &p)
		return len(p.Items)
	}
	before := keys()
	restore := tu.RefuseWrites(t, a.n.JetStream(), names.AuditStream("lossless"))
	_, _, err := a.op(t, "apikey", "create", "--tenant", "lossless", "--scope", "messages:read")
	wantProblem(t, err, "audit.unavailable")
	if keys() != before {
		t.Fatal("apikey create made a key although its audit entry was not written")
	}
	restore()
	var key client.APIKey
	a.mustJSON(t, &key, "apikey", "create", "--tenant", "lossless", "--scope", "messages:read")
	for range 3 {
		if r := api.Do("GET", "/v1/tenants/lossless/messages", key.Key, nil); r.Status != 200 {
			t.Fatalf("read messages: %d %s", r.Status, r.Body)
		}
	}
	out := a.mustOp(t, "audit", "list", "--tenant", "lossless", "--action", "data.read")
	wantLines(t, out, "apikey:"+key.ID)
	out = a.mustOp(t, "audit", "verify", "--tenant", "lossless")
	wantLines(t, out, "OK: the audit log of tenant lossless verifies")
}
